package enginetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

// The hook child is the test binary re-executed with -test.run set to the
// test's name and these variables set.
const (
	envHookChild = "HOLDFAST_ENGINETEST_HOOK_CHILD" // full name of the test
	envHookDir   = "HOLDFAST_ENGINETEST_HOOK_DIR"
)

// UnreadDeletedBeforeDurable checks that an engine calls
// Options.OnUnreadDeleted before the deletion it reports is durable: a
// process killed (SIGKILL) inside the hook holds, once reopened, every record
// the hook was given. What a hook makes durable before it returns (the
// node's loss-ledger intent file) is thus never behind the deletion. It
// re-executes the test binary as the child that is killed; open opens the
// engine with o, base carries engine-specific options.
func UnreadDeletedBeforeDurable(t *testing.T, base buffer.Options, open func(o buffer.Options) (buffer.Engine, error)) {
	if name := os.Getenv(envHookChild); name != "" {
		require.Equal(t, name, t.Name(), "hook child started for another test")
		hookChild(t, base, open, os.Getenv(envHookDir))
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run="+runPattern(t.Name()), "-test.count=1",
		"-test.timeout="+(2*hangLimit).String())
	cmd.Env = append(os.Environ(), envHookChild+"="+t.Name(), envHookDir+"="+dir)
	cmd.SysProcAttr = childProcAttr()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee) && isKilled(ee), "the child dies in the hook: %v\nstdout:\n%s\nstderr:\n%s",
		err, stdout.String(), stderr.String())
	var from, to uint64
	_, err = fmt.Sscanf(strings.TrimSpace(stdout.String()), "hook %d %d", &from, &to)
	require.NoError(t, err, "child output: %q", stdout.String())
	require.Less(t, from, to)

	o := base
	o.Dir, o.MaxBytes = dir, bigMaxBytes // no retention on reopen
	e, err := open(o)
	require.NoError(t, err)
	defer e.Close()
	require.LessOrEqual(t, e.FirstOffset(), from, "the records the hook was given are still held")
	r := e.NewReader(from)
	defer r.Close()
	for want := from; want < to; want++ {
		off, p, err := r.Next()
		require.NoError(t, err, "offset %d", want)
		require.Equal(t, want, off, "the records the hook was given are still held")
		require.Equal(t, unreadPayload(off), string(p))
	}
}

func unreadPayload(i uint64) string { return fmt.Sprintf("record-%06d-%s", i, strings.Repeat("x", 40)) }

// hookChild appends, with an unread cursor at 0, until retention calls the
// hook, which reports what it was given and kills the process.
func hookChild(t *testing.T, base buffer.Options, open func(o buffer.Options) (buffer.Engine, error), dir string) {
	o := base
	o.Dir, o.MaxBytes = dir, 16<<10
	o.OnUnreadDeleted = func(from, to uint64, _ buffer.RecordReader) {
		fmt.Fprintf(os.Stdout, "hook %d %d\n", from, to)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	e, err := open(o)
	require.NoError(t, err)
	require.NoError(t, e.CommitCursor("sync:x", 0))
	for i := uint64(0); i < 5000; i++ {
		_, err := e.Append([]byte(unreadPayload(i)))
		require.NoError(t, err)
	}
	t.Fatal("retention never called the hook")
}
