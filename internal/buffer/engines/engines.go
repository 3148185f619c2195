// Package engines opens a buffer.Engine by name (buffer.engine in the
// config): the native log (internal/buffer, the default), SQLite in WAL mode
// (internal/buffer/sqlitelog, modernc.org/sqlite) or an LSM store
// (internal/buffer/pebblelog, cockroachdb/pebble). All three keep the contract
// of buffer.Engine, checked by internal/buffer/enginetest.
package engines

import (
	"fmt"
	"strings"

	"github.com/holdfast-edge/holdfast/internal/buffer"
	"github.com/holdfast-edge/holdfast/internal/buffer/pebblelog"
	"github.com/holdfast-edge/holdfast/internal/buffer/sqlitelog"
)

// Names are the engines this build has, the default first.
var Names = []string{"log", "sqlite", "pebble"}

// Open opens (or creates) the engine name over o.Dir.
func Open(name string, o buffer.Options) (buffer.Engine, error) {
	switch name {
	case "", "log":
		return engine(buffer.Open(o))
	case "sqlite":
		return engine(sqlitelog.Open(o))
	case "pebble":
		return engine(pebblelog.Open(o))
	}
	return nil, fmt.Errorf("unknown buffer engine %q: this build has %s", name, strings.Join(Names, ", "))
}

// engine returns e as an Engine, and a nil Engine (not a nil pointer in one)
// on error.
func engine[E buffer.Engine](e E, err error) (buffer.Engine, error) {
	if err != nil {
		return nil, err
	}
	return e, nil
}
