// Package replica copies a primary's buffer to its standby, offset for offset,
// over core NATS request/reply: the standby (Follower) is one more reader of
// the primary's log (Source), by its own next offset, like a sink. With the
// records travel the primary's cursors and the state files the node names.
// The bytes are in docs/format/replication.md.
//
// What it promises: the standby's log holds at every offset what the
// primary's holds there, or a hole record where the primary holds nothing;
// the standby appends only durable records of the primary, ascending, each
// reply in one fsync; a cursors snapshot is applied whole, once every position
// in it is on the standby's disk; a mirrored file is replaced atomically. The
// primary counts an offset as replicated only once the standby has said it
// holds it durably (its next fetch), which is what sync replication waits for
// (Source.WaitReplicated). Members with different node ids never replicate.
package replica

import (
	"errors"
	"fmt"
)

// Errors a fetch can end with; the standby gets them from the primary's reply
// (docs/format/replication.md "Error codes").
var (
	// ErrNotPrimary: the member asked holds no valid term.
	ErrNotPrimary = errors.New("replica: not a primary")
	// ErrTerm: the standby follows another term than the primary holds.
	ErrTerm = errors.New("replica: term mismatch")
	// ErrNodeID: the members carry different node ids. Permanent.
	ErrNodeID = errors.New("replica: node id mismatch: both members must be configured with the same node id")
	// ErrDiverged: the standby's log does not continue the primary's.
	// Permanent.
	ErrDiverged = errors.New("replica: logs diverged")
	// ErrMalformed: a fetch or reply could not be decoded.
	ErrMalformed = errors.New("replica: malformed message")
	// ErrSource: the primary could not read its log or files.
	ErrSource = errors.New("replica: primary failed to serve")
)

// Error codes on the wire (docs/format/replication.md).
const (
	codeOK          = 0
	codeNotPrimary  = 1
	codeTerm        = 2
	codeNodeID      = 3
	codeDiverged    = 4
	codeMalformed   = 5
	codeSourceError = 6
)

var codeErrs = map[byte]error{
	codeNotPrimary:  ErrNotPrimary,
	codeTerm:        ErrTerm,
	codeNodeID:      ErrNodeID,
	codeDiverged:    ErrDiverged,
	codeMalformed:   ErrMalformed,
	codeSourceError: ErrSource,
}

// errCode returns the wire code of err (ErrSource for any other error).
func errCode(err error) byte {
	for code, e := range codeErrs {
		if errors.Is(err, e) {
			return code
		}
	}
	return codeSourceError
}

// remoteError is an error reply: the code's sentinel, with the primary's
// message.
type remoteError struct {
	code byte
	msg  string
}

func (e *remoteError) Error() string { return "primary: " + e.msg }

func (e *remoteError) Unwrap() error { return codeErrs[e.code] }

// permanent reports whether a follower must stop on err rather than retry.
func permanent(err error) bool {
	return errors.Is(err, ErrNodeID) || errors.Is(err, ErrDiverged)
}

func errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
