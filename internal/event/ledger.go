package event

import "encoding/binary"

// TypeLedger is a loss-ledger record (docs/format/ledger.md): records or
// events that left the buffer, or never entered it, unsynced, by reason.
const TypeLedger byte = 0x07

// Ledger reasons (docs/format/ledger.md).
const (
	LossSampled         byte = 1
	LossRefused         byte = 2
	LossDownsampled     byte = 3
	LossDropped         byte = 4
	LossEvictedUnsynced byte = 5
	LossUnreplicated    byte = 6
	LossWindowsDeferred byte = 7 // window results held back at limited: recomputed on the step down
	LossUnwindowed      byte = 8 // events not windowed at minimal: recomputed on the step down
)

var lossNames = [...]string{LossSampled: "sampled", LossRefused: "refused", LossDownsampled: "downsampled",
	LossDropped: "dropped", LossEvictedUnsynced: "evicted_unsynced", LossUnreplicated: "unreplicated",
	LossWindowsDeferred: "windows_deferred", LossUnwindowed: "unwindowed"}

// LossName is a reason's name, "" for an unknown one.
func LossName(r byte) string {
	if int(r) < len(lossNames) {
		return lossNames[r]
	}
	return ""
}

// OffsetRange is the offsets [First, First+Len).
type OffsetRange struct {
	First, Len uint64
}

// LedgerRecord accounts for lost events of one stream, for one reason, over
// [From, To] (wall-clock Unix ms).
type LedgerRecord struct {
	Reason   byte
	Stream   string
	From, To int64
	Count    uint64
	Ranges   []OffsetRange // ascending, disjoint; none for sampled, refused and unreplicated
}

// AppendBinary appends the record's payload.
func (l *LedgerRecord) AppendBinary(dst []byte) []byte {
	dst = append(dst, TypeLedger, l.Reason)
	dst = appendString(dst, l.Stream)
	dst = binary.AppendVarint(dst, l.From)
	dst = binary.AppendVarint(dst, l.To)
	dst = binary.AppendUvarint(dst, l.Count)
	dst = binary.AppendUvarint(dst, uint64(len(l.Ranges)))
	end := uint64(0)
	for _, r := range l.Ranges {
		dst = binary.AppendUvarint(dst, r.First-end)
		dst = binary.AppendUvarint(dst, r.Len)
		end = r.First + r.Len
	}
	return dst
}

// DecodeLedger decodes a ledger payload, checking every rule of the format:
// a known reason, From ≤ To, Count ≥ 1, ranges ascending and disjoint with
// lengths ≥ 1 summing to Count when there are any.
func DecodeLedger(b []byte) (LedgerRecord, error) {
	var l LedgerRecord
	d, err := start(b, TypeLedger)
	if err != nil {
		return l, err
	}
	l.Reason = d.byte()
	if d.err == nil && LossName(l.Reason) == "" {
		d.fail("unknown ledger reason")
	}
	l.Stream = d.string(1, MaxNameLen)
	l.From, l.To = d.varint(), d.varint()
	l.Count = d.uvarint()
	n := d.uvarint()
	unranged := l.Reason == LossSampled || l.Reason == LossRefused || l.Reason == LossUnreplicated ||
		l.Reason == LossWindowsDeferred || l.Reason == LossUnwindowed
	if d.err == nil && (l.From > l.To || l.Count == 0 || n > uint64(len(d.b))/2 || (unranged && n > 0)) {
		d.fail("ledger times, count or range count out of range")
	}
	end, sum := uint64(0), uint64(0)
	for i := uint64(0); i < n && d.err == nil; i++ {
		gap, length := d.uvarint(), d.uvarint()
		first := end + gap
		if d.err == nil && (length == 0 || first < end || (i > 0 && gap == 0) || first+length < first) {
			d.fail("ledger ranges not ascending and disjoint")
			break
		}
		l.Ranges = append(l.Ranges, OffsetRange{first, length})
		end, sum = first+length, sum+length
	}
	if d.err == nil && n > 0 && sum != l.Count {
		d.fail("ledger ranges do not add up to the count")
	}
	return l, d.finish()
}
