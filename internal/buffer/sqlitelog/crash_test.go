package sqlitelog

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/buffer"
)

const crashChildEnv = "SQLITELOG_CRASH_DIR"

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// crashChild appends from many goroutines and prints every acknowledged record
// and cursor commit until it is killed.
func crashChild() {
	l, err := Open(buffer.Options{Dir: os.Getenv(crashChildEnv)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	for w := range 16 {
		go func() {
			for seq := 0; ; seq++ {
				p := fmt.Sprintf("w%d-%d", w, seq)
				off, err := l.Append([]byte(p), []byte(p+"b"))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(3)
				}
				mu.Lock()
				fmt.Fprintf(out, "rec %d %s\n", off, p)
				out.Flush()
				mu.Unlock()
				if w == 0 && seq%10 == 0 {
					if err := l.CommitCursor("c", off); err != nil {
						os.Exit(4)
					}
					mu.Lock()
					fmt.Fprintf(out, "cur %d\n", off)
					out.Flush()
					mu.Unlock()
				}
			}
		}()
	}
	select {}
}

// TestCrash kills a process appending from 16 goroutines (SIGKILL) and checks
// that every record and cursor it acknowledged is there after reopening.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		acked := map[uint64]string{}
		var cursor uint64
		sc := bufio.NewScanner(stdout)
		deadline := time.Now().Add(20 * time.Second)
		for len(acked) < 2000 && time.Now().Before(deadline) && sc.Scan() {
			f := strings.Fields(sc.Text())
			off, err := strconv.ParseUint(f[1], 10, 64)
			require.NoError(t, err)
			if f[0] == "rec" {
				acked[off] = f[2]
			} else {
				cursor = max(cursor, off)
			}
		}
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		require.NotEmpty(t, acked)

		l := open(t, dir, 0)
		offs, ps := readAll(t, l, 0)
		got := map[uint64]string{}
		for i, off := range offs {
			require.Equal(t, uint64(i), off, "no gaps")
			got[off] = ps[i]
		}
		for off, p := range acked {
			require.Equal(t, p, got[off], "round %d: acknowledged record %d", round, off)
			require.Equal(t, p+"b", got[off+1], "round %d: acknowledged record %d", round, off+1)
		}
		c, _ := l.Cursor("c")
		require.GreaterOrEqual(t, c, cursor, "acknowledged cursor")
		require.Equal(t, uint64(len(offs)), l.NextOffset())
		t.Logf("round %d: %d acknowledged, %d after reopen", round, 2*len(acked), len(offs))
		require.NoError(t, l.Close())
	}
}
