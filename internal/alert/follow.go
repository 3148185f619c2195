package alert

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/holdfast-edge/holdfast/internal/event"
)

// follow is w's reader of the log: it hands each alert record to the notifier
// in offset order and moves w's cursor past an alert only once the notifier
// is done with it (docs/format/notify.md). It returns when the dispatcher is
// stopping and w has reached the log's end, or is stopped in the middle of an
// alert, which then stays after the cursor.
func (d *Dispatcher) follow(w *worker) {
	c := cursorSaver{d: d, w: w, saved: w.pos.Load(), at: time.Now()}
	defer c.save(true)
	r := d.buf.NewReader(w.pos.Load())
	defer func() { r.Close() }()
	for {
		off, payload, err := r.Next()
		if errors.Is(err, io.EOF) {
			c.save(false)
			if d.stopping.Err() != nil {
				return
			}
			wait, cancel := context.WithTimeout(d.stopping, d.saveEvery)
			err := d.buf.WaitDurable(wait, r.Position()+1)
			cancel()
			if err != nil && wait.Err() == nil {
				d.log.Error("alert notifier stopped: the log failed", "notifier", w.name, "err", err)
				<-d.stopping.Done()
				return
			}
			continue
		}
		if err != nil {
			// Damage found while reading: the next open of the log quarantines
			// it. Try again from the cursor after a pause.
			d.log.Error("alert notifier cannot read the log; retrying", "notifier", w.name, "offset", w.pos.Load(), "err", err)
			select {
			case <-time.After(d.saveEvery):
			case <-d.stopping.Done():
				return
			}
			r.Close()
			r = d.buf.NewReader(w.pos.Load())
			continue
		}
		if next := w.pos.Load(); off > next {
			n := w.skipped.Add(off - next)
			d.log.Warn("alert notifier passed over records deleted before it read them", "notifier", w.name,
				"from", next, "to", off, "skipped_total", n)
		}
		handed := false
		if event.Type(payload) == event.TypeAlert {
			rec, err := event.DecodeAlert(payload)
			if err != nil {
				d.log.Error("alert record does not decode; passed over", "notifier", w.name, "offset", off, "err", err)
			} else if a := FromRecord(&rec); w.primary {
				if d.notify(w, a) {
					return
				}
				handed = true
			} else if a.Severity == Critical && d.useBackup != nil && d.useBackup() {
				d.handToBackup(a, "offline")
				if d.ctx.Err() != nil {
					return
				}
				handed = true
			}
		}
		w.pos.Store(off + 1)
		if handed {
			c.save(true)
		} else {
			c.passed()
		}
	}
}

// cursorSaver saves a worker's cursor: at once after an alert, otherwise at
// most every saveEvery.
type cursorSaver struct {
	d      *Dispatcher
	w      *worker
	saved  uint64    // the position last saved
	at     time.Time // when
	failed bool      // a save has failed: logged once
	n      uint      // records passed since the clock was last read
}

// checkEvery is how many records that are not alerts a notifier passes
// between readings of the clock for a timed save while it catches up: a log
// of events is mostly such records, and reading the clock for each doubled
// the reader's cost per record (BenchmarkFollowEvents).
const checkEvery = 1024

// passed notes a record that was not an alert for w: its position is saved
// with the next alert, at the log's end or on a timed save.
func (c *cursorSaver) passed() {
	if c.n++; c.n < checkEvery {
		return
	}
	c.n = 0
	c.save(false)
}

func (c *cursorSaver) save(now bool) {
	pos := c.w.pos.Load()
	if pos == c.saved || !now && time.Since(c.at) < c.d.saveEvery {
		return
	}
	if err := c.d.buf.CommitCursor(c.w.cursor, pos); err != nil {
		if !c.failed {
			c.failed = true
			c.d.log.Error("notifier cursor not saved; a restart delivers again from the last one saved",
				"notifier", c.w.name, "err", err)
		}
		return
	}
	c.saved, c.at = pos, time.Now()
}

// FromRecord rebuilds the alert a log record describes.
func FromRecord(r *event.AlertRecord) Alert {
	a := Alert{
		ID: r.ID(), Rule: r.Rule, Severity: Severity(r.Severity), State: Resolved,
		Stream: r.Stream, DeviceID: r.DeviceID, Value: r.Value, Threshold: r.Threshold,
		FiredAt: r.FiredAt, ResolvedAt: r.ResolvedAt,
	}
	if r.Firing {
		a.State = Firing
	}
	return a
}
