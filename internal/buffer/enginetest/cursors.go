package enginetest

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// requireCursors requires Cursors to equal want, and Cursor to agree with it
// for every name in want and for one that is not.
func requireCursors(t *testing.T, e buffer.Engine, want map[string]uint64) {
	t.Helper()
	got := e.Cursors()
	require.Len(t, got, len(want), "Cursors: %v", got)
	for name, off := range want {
		require.Equal(t, off, got[name], "Cursors()[%q]", name)
		c, ok := e.Cursor(name)
		require.True(t, ok, "Cursor(%q) exists", name)
		require.Equal(t, off, c, "Cursor(%q)", name)
	}
	_, ok := e.Cursor("never-committed")
	require.False(t, ok, "a cursor never committed does not exist")
}

// testCursors: cursors read back as committed, through Cursor and Cursors alike,
// a failed CommitCursors changes none of them, and they survive reopening. (That
// a commit is all-or-nothing across a crash is checked by the crash subtest.)
func testCursors(t *testing.T, open Opener) {
	dir := t.TempDir()
	e := openEngine(t, open, dir, bigMaxBytes)
	requireCursors(t, e, map[string]uint64{})
	first, err := e.Append([]byte("x"), []byte("y"), []byte("z"))
	require.NoError(t, err)

	want := map[string]uint64{}
	require.NoError(t, e.CommitCursor("cloud", first+1))
	want["cloud"] = first + 1
	requireCursors(t, e, want)

	batch := map[string]uint64{"cloud": first + 2, "http": first + 1, "mqtt": first + 3}
	require.NoError(t, e.CommitCursors(batch))
	for k, v := range batch {
		want[k] = v
	}
	requireCursors(t, e, want)

	// The map Cursors returns is the caller's.
	mine := e.Cursors()
	mine["cloud"] = 999
	mine["intruder"] = 1
	requireCursors(t, e, want)

	// A commit with a name the engine refuses changes nothing; if it accepts
	// every name, all of them are set.
	bad := map[string]uint64{"cloud": first + 3, "": first + 3}
	if err := e.CommitCursors(bad); err != nil {
		t.Logf("CommitCursors with an empty name: %v", err)
	} else {
		for k, v := range bad {
			want[k] = v
		}
	}
	requireCursors(t, e, want)

	// Many cursors in one commit.
	many := map[string]uint64{}
	for i := range 100 {
		many[fmt.Sprintf("sink-%03d", i)] = first + uint64(i%3)
	}
	require.NoError(t, e.CommitCursors(many))
	for k, v := range many {
		want[k] = v
	}
	requireCursors(t, e, want)
	e.shut(t)

	for round := range 2 {
		e = openEngine(t, open, dir, bigMaxBytes)
		requireCursors(t, e, want)
		require.NoError(t, e.CommitCursors(map[string]uint64{"cloud": first + 3, "late": first + uint64(round)}))
		want["cloud"], want["late"] = first+3, first+uint64(round)
		requireCursors(t, e, want)
		e.shut(t)
	}
	e = openEngine(t, open, dir, bigMaxBytes)
	requireCursors(t, e, want)
	e.shut(t)
}
