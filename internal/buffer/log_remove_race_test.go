package buffer

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer/vfs"
)

// Retention unlists segment 0 between Remove's snapshot of the sealed
// segments and its marking them "removing". Remove must then leave that
// segment's records (retention reports them): hiding them would make
// retention's reader, on the writer goroutine, wait in Skip for a confirm
// that appends (the node's ledger records) and so waits for the writer — a
// deadlock — or list them in the ledger twice.
func TestRemoveRacingRetention(t *testing.T) {
	unlisted, hidden := make(chan struct{}), make(chan struct{})
	fs := vfs.NewMem()
	l, err := Open(Options{Dir: "/log", FS: fs, SegmentBytes: 4096, MaxBytes: 6 * 4096,
		OnUnreadDeleted: func(from, to uint64, r RecordReader) {
			select {
			case <-unlisted: // only the first retention is staged
				for {
					if _, _, err := r.Next(); err != nil {
						return
					}
				}
			default:
			}
			close(unlisted)
			<-hidden // production: reading the segment takes time
			for {
				if _, _, err := r.Next(); err != nil {
					return
				}
			}
		}})
	require.NoError(t, err)
	// Nothing synced: retention reports unread. A few sealed segments,
	// under MaxBytes.
	require.NoError(t, l.CommitCursor("sync", 0))
	for i := 0; ; i++ {
		_, err := l.Append(payload(i))
		require.NoError(t, err)
		l.segMu.RLock()
		n := len(l.segments)
		l.segMu.RUnlock()
		if n >= 4 {
			break
		}
	}
	select {
	case <-unlisted:
		t.Fatal("retention ran already")
	default:
	}
	seg0 := l.segments[0]
	offs := []uint64{seg0.base + 1, seg0.base + 2}

	testHookRemoveSnapshot = func() {
		testHookRemoveSnapshot = nil
		// Appends elsewhere roll the segment; retention unlists segment 0.
		go func() {
			for i := 0; ; i++ {
				if _, err := l.Append(payload(i)); err != nil {
					return
				}
			}
		}()
		<-unlisted
	}
	defer func() { testHookRemoveSnapshot = nil }()

	var once sync.Once
	release := func() { once.Do(func() { close(hidden) }) }
	done := make(chan error, 1)
	var removed []uint64
	go func() {
		var err error
		removed, err = l.Remove(offs, func(h []uint64) []uint64 {
			release()
			// The node's confirm: ledger records appended to the same log.
			_, err := l.Append([]byte("ledger record"))
			if err != nil {
				return nil
			}
			return h
		})
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
		require.Empty(t, removed, "the records of a segment retention took are retention's")
		release()
		require.NoError(t, l.Close())
	case <-time.After(time.Minute): // a hang guard, not a timing assertion
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Log(string(buf[:n]))
		t.Fatal("deadlock: Remove's confirm waits for the writer, the writer's retention reader waits in Hidden.Skip for Remove")
	}
}
