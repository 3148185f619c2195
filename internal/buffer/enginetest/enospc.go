package enginetest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	// envRequireTmpfs=1 turns the ENOSPC subtest's skip (no permission to
	// mount) into a failure; .ci/run sets it where a probe mount succeeds.
	envRequireTmpfs = "HOLDFAST_REQUIRE_TMPFS"
	enospcFS        = "2m"    // the tmpfs
	enospcFiller    = 1 << 20 // bytes of it taken before the engine opens
	enospcRecord    = 4096
	// enospcMaxAppends bounds the appends: 16 MiB, eight times the tmpfs.
	enospcMaxAppends = 4096
)

// saysNoSpace reports whether err tells that the disk is full.
func saysNoSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "no space") || strings.Contains(s, "disk is full") || strings.Contains(s, "disk full")
}

// testENOSPC: on a 2 MiB tmpfs, half of it taken by a filler file, appends go on
// until the disk is full. The failure must come back from Append (not a panic or
// a hang); Err must report it and say the disk is full; later Appends must fail,
// also once space is free again (the filler deleted). Reopened with that space,
// the engine must hold every record acknowledged before, at its offset, dense,
// nothing that was never sent, and take appends again after them.
func testENOSPC(t *testing.T, open Opener) {
	mnt := t.TempDir()
	if err := mountTmpfs(mnt, enospcFS); err != nil {
		msg := fmt.Sprintf("cannot mount a %s tmpfs on %s: %v — mounting needs root (CAP_SYS_ADMIN) on Linux; "+
			"the full-disk contract is NOT checked", enospcFS, mnt, err)
		if os.Getenv(envRequireTmpfs) == "1" {
			t.Fatalf("%s (and %s=1 requires it)", msg, envRequireTmpfs)
		}
		t.Skipf("%s; set %s=1 to make this a failure", msg, envRequireTmpfs)
	}
	t.Cleanup(func() {
		if err := unmount(mnt); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	filler := filepath.Join(mnt, "filler")
	require.NoError(t, os.WriteFile(filler, make([]byte, enospcFiller), 0o600))
	dir := filepath.Join(mnt, "engine")
	require.NoError(t, os.Mkdir(dir, 0o700))

	e := openEngine(t, open, dir, bigMaxBytes)
	require.NoError(t, e.Err())
	sent := map[string]bool{}
	acked := map[uint64][]byte{}
	var appendErr error
	for i := 0; appendErr == nil; i++ {
		require.Less(t, i, enospcMaxAppends, "%d appends of %d bytes to a %s tmpfs all succeeded", i, enospcRecord, enospcFS)
		id := fmt.Sprintf("full-%d", i)
		p := makePayload(id, enospcRecord)
		sent[id] = true
		var off uint64
		bounded(t, "Append on a filling disk", func() { off, appendErr = e.Append(p) })
		if appendErr == nil {
			acked[off] = p
		}
	}
	t.Logf("Append failed after %d acknowledged records: %v", len(acked), appendErr)
	require.NotEmpty(t, acked, "the engine acknowledged nothing on a disk with %d KiB free", (2<<20-enospcFiller)>>10)
	var failure error
	bounded(t, "Err on a full disk", func() { failure = e.Err() })
	require.Error(t, failure, "Err reports the failed write")
	require.True(t, saysNoSpace(failure), "Err says the disk is full: %v", failure)

	require.NoError(t, os.Remove(filler))
	for j := range 3 {
		id := fmt.Sprintf("after-%d", j)
		sent[id] = true
		bounded(t, "Append after the failure", func() { _, appendErr = e.Append(makePayload(id, 16)) })
		require.Error(t, appendErr, "a failed engine acknowledges nothing more, also once the disk has room")
	}
	var closeErr error
	bounded(t, "Close after the failure", func() { closeErr = e.Close() })
	e.closed = true
	t.Logf("Close after the failure: %v", closeErr)

	e = openEngine(t, open, dir, bigMaxBytes)
	requireIdle(t, e)
	first, next := e.FirstOffset(), e.NextOffset()
	recs := readAll(t, e, 0)
	requireDense(t, recs, first, next)
	for _, r := range recs {
		id, ok := parsePayload(r.payload)
		require.True(t, ok && sent[id], "record %d was never sent", r.off)
	}
	for off, p := range acked {
		require.True(t, off >= first && off < next, "acknowledged record %d lost (held: %d to %d)", off, first, next)
		require.Equal(t, p, recs[off-first].payload, "payload of acknowledged record %d", off)
	}
	off, err := e.Append(makePayload("reopened", 16))
	require.NoError(t, err, "appends work again once reopened with room")
	require.Equal(t, next, off)
	e.shut(t)
}
