package alert

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// backupScript is a backup channel as an operator would write one: it appends
// the alert JSON from stdin and a line of the environment to $OUT.
const backupScript = `#!/bin/sh
cat >> "$OUT"
echo >> "$OUT"
echo "severity=$HOLDFAST_ALERT_SEVERITY state=$HOLDFAST_ALERT_STATE id=$HOLDFAST_ALERT_ID rule=$HOLDFAST_ALERT_RULE device=$HOLDFAST_ALERT_DEVICE_ID stream=$HOLDFAST_ALERT_STREAM value=$HOLDFAST_ALERT_VALUE" >> "$OUT"
`

// writeScript writes an executable script to the test's temporary directory.
func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// backupOutput makes $OUT a fresh file and returns its path.
func backupOutput(t *testing.T) string {
	out := filepath.Join(t.TempDir(), "out")
	t.Setenv("OUT", out)
	return out
}

// scriptRecord is what backupScript wrote for one alert.
type scriptRecord struct {
	alert Alert
	env   string
}

// readRecords reads what backupScript has written so far.
func readRecords(t *testing.T, path string) []scriptRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var recs []scriptRecord
	for i := 0; i+1 < len(lines); i += 2 {
		var r scriptRecord
		if err := json.Unmarshal([]byte(lines[i]), &r.alert); err != nil {
			t.Fatalf("record %d: %q: %v", i/2, lines[i], err)
		}
		r.env = lines[i+1]
		recs = append(recs, r)
	}
	return recs
}

func TestCommandNotifier(t *testing.T) {
	out := backupOutput(t)
	n := NewCommand(CommandOptions{Path: writeScript(t, "backup.sh", backupScript)})
	if n.Name() != "command" {
		t.Fatalf("name %q", n.Name())
	}
	a := sample("hot", Critical)
	if err := n.Notify(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	recs := readRecords(t, out)
	if len(recs) != 1 || recs[0].alert != a {
		t.Fatalf("records %+v", recs)
	}
	raw, _ := os.ReadFile(out)
	if !strings.HasPrefix(string(raw), mustJSON(t, a)+"\n") {
		t.Fatalf("stdin was not the alert JSON: %s", raw)
	}
	want := "severity=critical state=firing id=hot/d1/1700000000123 rule=hot device=d1 stream=temperature value=31.5"
	if recs[0].env != want {
		t.Fatalf("env line %q\nwant %q", recs[0].env, want)
	}
}

func TestCommandFailures(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "runs")
	t.Setenv("RUNS", count)
	failing := writeScript(t, "fail.sh", `#!/bin/sh
echo run >> "$RUNS"
head -c 3000 /dev/zero | tr '\0' x >&2
echo "modem busy" >&2
exit 3
`)
	n := NewCommand(CommandOptions{Path: failing, Retry: fastRetry(3)})
	err := n.Notify(context.Background(), sample("hot", Critical))
	runs, _ := os.ReadFile(count)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.HasSuffix(err.Error(), "xxxmodem busy") ||
		len(err.Error()) > stderrTail+200 {
		t.Fatalf("error %v", err)
	}
	if strings.Count(string(runs), "run") != 3 {
		t.Fatalf("ran %d times, want 3", strings.Count(string(runs), "run"))
	}

	// A program that cannot be started is not retried.
	n = NewCommand(CommandOptions{Path: filepath.Join(dir, "missing"), Retry: fastRetry(3)})
	if err := n.Notify(context.Background(), sample("hot", Critical)); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing program: %v", err)
	}

	// A run that outlives its timeout is killed.
	slow := writeScript(t, "slow.sh", "#!/bin/sh\necho started >&2\nexec sleep 60\n")
	n = NewCommand(CommandOptions{Path: slow, Timeout: 100 * time.Millisecond, Retry: fastRetry(1)})
	if err := n.Notify(context.Background(), sample("hot", Critical)); err == nil || !strings.Contains(err.Error(), "timed out after 100ms") {
		t.Fatalf("slow program: %v", err)
	}

	if err := NewCommand(CommandOptions{}).Notify(context.Background(), sample("hot", Critical)); err == nil ||
		err.Error() != "command command: path is required" {
		t.Fatalf("no path: %v", err)
	}
}

func TestTail(t *testing.T) {
	var tl tail
	for i := 0; i < 300; i++ {
		_, _ = tl.Write([]byte("0123456789"))
	}
	_, _ = tl.Write([]byte("END"))
	s := tl.String()
	if len(s) != stderrTail || !strings.HasSuffix(s, "789END") {
		t.Fatalf("tail %d bytes ending %q", len(s), s[len(s)-10:])
	}
	tl = tail{}
	_, _ = tl.Write([]byte(strings.Repeat("y", 5000) + "Z"))
	if s := tl.String(); len(s) != stderrTail || !strings.HasSuffix(s, "yZ") {
		t.Fatalf("tail of one big write: %d bytes", len(s))
	}
}
