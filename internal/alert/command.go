package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// CommandOptions configure a command notifier, typically the backup channel (an
// SMS or cellular gateway script).
type CommandOptions struct {
	Name    string        `yaml:"name"`    // default "command"
	Path    string        `yaml:"path"`    // the program; required
	Args    []string      `yaml:"args"`    //
	Timeout time.Duration `yaml:"timeout"` // per run, default 10s
	Retry   RetryOptions  `yaml:"retry"`   // a failed run is retried like a webhook
}

// WithDefaults returns o with zero fields set to their defaults.
func (o CommandOptions) WithDefaults() CommandOptions {
	if o.Name == "" {
		o.Name = "command"
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	o.Retry = o.Retry.WithDefaults()
	return o
}

// Validate reports the first problem with the options.
func (o CommandOptions) Validate() error {
	if len(o.Name) > MaxNotifierName {
		return fmt.Errorf("command %s: name longer than %d bytes", o.Name, MaxNotifierName)
	}
	if o.Path == "" {
		return fmt.Errorf("command %s: path is required", o.Name)
	}
	if o.Timeout < 0 {
		return fmt.Errorf("command %s: timeout %s must not be negative", o.Name, o.Timeout)
	}
	if err := o.Retry.Validate(); err != nil {
		return fmt.Errorf("command %s: %w", o.Name, err)
	}
	return nil
}

// NewCommand returns a notifier that runs a program per alert, with the alert's
// JSON on stdin and, added to the node's environment, HOLDFAST_ALERT_ID, _RULE,
// _SEVERITY, _STATE, _DEVICE_ID, _STREAM, _VALUE, _THRESHOLD, _FIRED_AT and, for
// a resolve, _RESOLVED_AT (times RFC 3339). Exit status 0 is delivery; a
// non-zero exit or a timeout is an error carrying the tail of stderr, and is
// retried. A program that cannot be started is not retried.
func NewCommand(o CommandOptions) Notifier {
	o = o.WithDefaults()
	return &command{o: o, invalid: o.Validate()}
}

type command struct {
	o       CommandOptions
	invalid error
}

// stderrTail is how much of a failed run's stderr its error quotes.
const stderrTail = 1024

func (c *command) Name() string { return c.o.Name }

func (c *command) Notify(ctx context.Context, a Alert) error {
	if c.invalid != nil {
		return c.invalid
	}
	payload, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("command %s: encode alert %s: %w", c.o.Name, a.ID, err)
	}
	env := append(os.Environ(),
		"HOLDFAST_ALERT_ID="+a.ID,
		"HOLDFAST_ALERT_RULE="+a.Rule,
		"HOLDFAST_ALERT_SEVERITY="+string(a.Severity),
		"HOLDFAST_ALERT_STATE="+string(a.State),
		"HOLDFAST_ALERT_DEVICE_ID="+a.DeviceID,
		"HOLDFAST_ALERT_STREAM="+a.Stream,
		"HOLDFAST_ALERT_VALUE="+strconv.FormatFloat(a.Value, 'g', -1, 64),
		"HOLDFAST_ALERT_THRESHOLD="+strconv.FormatFloat(a.Threshold, 'g', -1, 64),
		"HOLDFAST_ALERT_FIRED_AT="+formatMS(a.FiredAt),
	)
	if a.ResolvedAt != 0 {
		env = append(env, "HOLDFAST_ALERT_RESOLVED_AT="+formatMS(a.ResolvedAt))
	}
	err = retry(ctx, c.o.Retry, nil, func() error { return c.run(ctx, payload, env) })
	if err != nil {
		return fmt.Errorf("command %s: %w", c.o.Name, err)
	}
	return nil
}

// run runs the program once.
func (c *command) run(ctx context.Context, stdin []byte, env []string) error {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.o.Path, c.o.Args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = env
	var stderr tail
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second // a child that keeps stderr open cannot hold us past the kill
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) && !errors.Is(err, exec.ErrWaitDelay) {
		return backoff.Permanent(fmt.Errorf("run %s: %w", c.o.Path, err)) // could not start it
	}
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("timed out after %s: %w", c.o.Timeout, err)
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		return fmt.Errorf("run %s: %w; stderr: %s", c.o.Path, err, msg)
	}
	return fmt.Errorf("run %s: %w", c.o.Path, err)
}

// tail keeps the last stderrTail bytes written to it.
type tail struct{ b []byte }

func (t *tail) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= stderrTail {
		p = p[len(p)-stderrTail:]
	}
	if over := len(t.b) + len(p) - stderrTail; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tail) String() string { return string(t.b) }
