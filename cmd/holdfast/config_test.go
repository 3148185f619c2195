package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/holdfast-edge/holdfast/internal/config"
)

// execute runs the holdfast command line with args, in process.
func execute(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := rootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errOut.String(), err
}

func TestConfigCheckReportsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "holdfast.yaml")
	require.NoError(t, os.WriteFile(path, []byte("htpp:\n  addr: x\ncheckpoints:\n  interval: 5 minutes\nbuffer:\n  engine: rocksdb\n"), 0o600))
	_, stderr, err := execute(t, "config", "check", path)
	require.EqualError(t, err, path+" is invalid: 3 problems")
	require.Equal(t, []string{
		path + ":1: htpp: unknown key (did you mean http?)",
		path + `:4: checkpoints.interval: "5 minutes" is not a duration: use Go syntax like 5m or 30s`,
		path + `:6: buffer.engine: "rocksdb" must be log, sqlite or pebble`,
	}, strings.Split(strings.TrimSpace(stderr), "\n"))
}

func TestConfigInitWritesAValidExampleOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "holdfast.yaml")
	_, _, err := execute(t, "config", "init", path)
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, config.Example, b)
	stdout, _, err := execute(t, "config", "check", path)
	require.NoError(t, err)
	require.Equal(t, path+": ok\n", stdout)

	require.NoError(t, os.WriteFile(path, []byte("mine\n"), 0o600))
	_, _, err = execute(t, "config", "init", path)
	require.ErrorContains(t, err, "exists")
	b, _ = os.ReadFile(path)
	require.Equal(t, "mine\n", string(b), "an existing file is kept")

	for _, args := range [][]string{{"config", "init"}, {"config", "init", "-"}} {
		stdout, _, err := execute(t, args...)
		require.NoError(t, err)
		require.Equal(t, string(config.Example), stdout)
	}
}

func TestConfigPrintShowsDefaultsAndFileRedacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "holdfast.yaml")
	require.NoError(t, os.WriteFile(path, []byte("node_id: store-42\ncloud:\n  url: nats://u:hunter2@cloud.example:4222\n  password: hunter2\n"), 0o600))
	stdout, _, err := execute(t, "config", "print", "--config", path)
	require.NoError(t, err)
	require.NotContains(t, stdout, "hunter2")
	cfg, err := config.Parse([]byte(stdout))
	require.NoError(t, err)
	require.Equal(t, "store-42", cfg.NodeID)
	require.Equal(t, config.RedactedMarker, cfg.Cloud.Password)
	require.Equal(t, config.Default().Windows, cfg.Windows, "keys not in the file show their defaults")

	stdout, _, err = execute(t, "config", "print")
	require.NoError(t, err)
	cfg, err = config.Parse([]byte(stdout))
	require.NoError(t, err)
	require.Empty(t, cfg.Streams)
	cfg.Streams = nil // printed as {}
	require.Equal(t, config.Default(), cfg)
}

func TestVersion(t *testing.T) {
	stdout, _, err := execute(t, "version")
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	require.Equal(t, "holdfast dev", lines[0])
	require.Regexp(t, `^commit: \S+`, lines[1])
	require.Regexp(t, `^built:  \S+`, lines[2])

	stdout, _, err = execute(t, "--version")
	require.NoError(t, err)
	require.Equal(t, "holdfast dev\n", stdout)

	commit, buildDate = "0123abc", "2026-12-07T08:00:00Z"
	defer func() { commit, buildDate = "", "" }()
	stdout, _, err = execute(t, "version")
	require.NoError(t, err)
	require.Contains(t, stdout, "commit: 0123abc\nbuilt:  2026-12-07T08:00:00Z\n")
}

func TestRunLogFlagsOverrideTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "holdfast.yaml")
	require.NoError(t, os.WriteFile(path, []byte("log:\n  level: warn\n  format: text\n"), 0o600))
	var got config.Config
	start := func(c config.Config) error { got = c; return nil }
	run := func(args ...string) config.Config {
		c := runCmdWith(start)
		c.SetArgs(args)
		require.NoError(t, c.Execute())
		return got
	}
	require.Equal(t, config.Log{Level: "warn", Format: "text"}, run("--config", path).Log)
	require.Equal(t, config.Log{Level: "debug", Format: "json"}, run("--config", path, "--log-level", "debug", "--log-format", "json").Log)
	require.Equal(t, config.Log{Level: "error", Format: "text"}, run("--log-level", "error").Log)

	var buf bytes.Buffer
	logger := newLogger(config.Log{Level: "debug", Format: "json"}, &buf)
	logger.Debug("hello")
	require.True(t, strings.HasPrefix(buf.String(), `{"time":`), buf.String())
	require.Contains(t, buf.String(), `"level":"DEBUG","msg":"hello"`)
	buf.Reset()
	newLogger(config.Log{Level: "warn", Format: "text"}, &buf).Info("quiet")
	require.Empty(t, buf.String())
}

func TestNodeIDFromTheHostNameIsLogged(t *testing.T) {
	var buf bytes.Buffer
	logger := newLogger(config.Log{Level: "info", Format: "text"}, &buf)
	logNodeID(logger, "edge01", "edge01")
	logNodeID(logger, "edge01.example.com", "store-42")
	require.Empty(t, buf.String(), "nothing to say when the host name is used as it is, or another id is set")
	logNodeID(logger, "edge01.example.com", "edge01-example-com")
	require.Contains(t, buf.String(), `msg="node id is the host name made valid; choose another with --node-id or node_id" host=edge01.example.com node_id=edge01-example-com`)
}

// TestAggregateFlags: `holdfast aggregate --help` shows the pinned flags,
// and `holdfast run --aggregator URL` sets site.aggregator.
func TestAggregateFlags(t *testing.T) {
	c := rootCmd()
	var out bytes.Buffer
	c.SetOut(&out)
	c.SetArgs([]string{"aggregate", "--help"})
	require.NoError(t, c.Execute())
	for _, f := range []string{"--data-dir", "--listen", "--http-addr", "--cloud-url"} {
		require.Contains(t, out.String(), f)
	}

	var got config.Config
	r := runCmdWith(func(cfg config.Config) error { got = cfg; return nil })
	r.SetArgs([]string{"--aggregator", "nats://127.0.0.1:4223"})
	require.NoError(t, r.Execute())
	require.Equal(t, "nats://127.0.0.1:4223", got.Site.Aggregator)
}

func TestConfigReferencePrintsTheReference(t *testing.T) {
	stdout, _, err := execute(t, "config", "reference")
	require.NoError(t, err)
	require.Equal(t, config.Reference(), stdout)
	require.Contains(t, stdout, config.ReferenceCommand, "the reference says how to regenerate it")
	require.Contains(t, stdout, "| `site.failure_detection` | duration | `5s` |")
}
