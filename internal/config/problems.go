package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/holdfast-edge/holdfast/internal/suggest"
)

// Problem is one mistake in a configuration: where it is, which key, and a
// message that quotes the bad value and says what would be right.
type Problem struct {
	File string // "" when the config did not come from a file
	Line int    // 0 when unknown
	Key  string // the key's path, e.g. checkpoints.interval or alerts.rules[0].window
	Msg  string
	// Also are other keys the problem names (two listeners on one port): its
	// line is theirs when Key is not in the file.
	Also []string
	// Err, when set, is the cause (ErrRedacted); Msg is then empty and the
	// problem reads "KEY ERR".
	Err error
}

func (p *Problem) Error() string {
	var b strings.Builder
	switch {
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", p.File, p.Line)
	case p.File != "":
		fmt.Fprintf(&b, "%s: ", p.File)
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	b.WriteString(p.Key)
	if p.Msg == "" && p.Err != nil {
		b.WriteString(" ")
		b.WriteString(p.Err.Error())
		return b.String()
	}
	b.WriteString(": ")
	b.WriteString(p.Msg)
	return b.String()
}

func (p *Problem) Unwrap() error { return p.Err }

// Check reads the file at path over the defaults and validates the result:
// it returns every problem in the file, YAML mistakes (unknown keys, values of
// the wrong type) and invalid values alike, each with the file and, where
// known, the line of its key.
func Check(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Default(), err
	}
	cfg, lines, err := parse(data)
	if err != nil && !hasProblems(err) {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	errs := []error{err}
	if verr := cfg.Validate(); verr != nil {
		errs = append(errs, verr)
	}
	var out []error
	for _, e := range problemsOf(errors.Join(errs...)) {
		if p, ok := e.(*Problem); ok {
			p.File = path
			if p.Line == 0 {
				p.Line = lines.lineOf(p)
			}
		}
		out = append(out, e)
	}
	return cfg, errors.Join(out...)
}

// problemsOf flattens joined errors into their parts.
func problemsOf(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, problemsOf(e)...)
		}
		return out
	}
	return []error{err}
}

func hasProblems(err error) bool {
	var p *Problem
	return errors.As(err, &p)
}

// keyLines maps a key's path to the line it is on.
type keyLines map[string]int

// lineOf returns the line of p's key, else of a key it also names, else of
// the nearest key enclosing its key.
func (l keyLines) lineOf(p *Problem) int {
	for _, k := range append([]string{p.Key}, p.Also...) {
		if n, ok := l[k]; ok {
			return n
		}
	}
	return l.find(p.Key)
}

// find returns the line of key or of the nearest enclosing key present in
// the file; 0 if none is.
func (l keyLines) find(key string) int {
	for key != "" {
		if n, ok := l[key]; ok {
			return n
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return 0
		}
		key = key[:i]
	}
	return 0
}

// parse reads YAML over the defaults. A key the config does not have and a
// value of the wrong type are each a *Problem; the rest of the file is still
// read, so that one pass finds every such mistake.
func parse(data []byte) (Config, keyLines, error) {
	cfg := Default()
	lines := keyLines{}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return cfg, lines, nil
		}
		return cfg, lines, err
	}
	w := walker{lines: lines}
	if len(doc.Content) == 1 {
		if w.walk(doc.Content[0], reflect.TypeOf(cfg), "") {
			var rest []error
			if err := doc.Content[0].Decode(&cfg); err != nil {
				rest = append(rest, err)
			}
			w.problems = append(w.problems, rest...)
		}
	}
	return cfg, lines, errors.Join(w.problems...)
}

type walker struct {
	lines    keyLines
	problems []error
}

var (
	durationType    = reflect.TypeOf(time.Duration(0))
	byteSizeType    = reflect.TypeOf(ByteSize(0))
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

func (w *walker) bad(n *yaml.Node, key, format string, args ...any) {
	w.problems = append(w.problems, &Problem{Line: n.Line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// walk checks n against the Go type t it will be decoded into, records the
// line of every key, and removes what cannot be decoded (reporting it). It
// returns false when n itself is to be removed.
func (w *walker) walk(n *yaml.Node, t reflect.Type, key string) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode || n.Tag == "!!null" {
		return true
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) || isScalar(t) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			w.bad(n, key, "%s", typeMessage(t, n, err))
			return false
		}
		return true
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.bad(n, key, "%s is not a mapping: write its keys indented below it (%s)", describe(n), strings.Join(fieldNames(t), ", "))
			return false
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if f.IsExported() && name != "-" && name != "" {
				fields[name] = f.Type
			}
		}
		var keep []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := join(key, k.Value)
			if w.duplicate(k, path) {
				continue
			}
			ft, ok := fields[k.Value]
			if !ok {
				w.bad(k, path, "unknown key %s", didYouMean(k.Value, fieldNames(t)))
				continue
			}
			w.lines[path] = k.Line
			if w.walk(v, ft, path) {
				keep = append(keep, k, v)
			}
		}
		n.Content = keep
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.bad(n, key, "%s is not a mapping: write one NAME: VALUE per line below it", describe(n))
			return false
		}
		var keep []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := join(key, k.Value)
			if w.duplicate(k, path) {
				continue
			}
			w.lines[path] = k.Line
			if w.walk(v, t.Elem(), path) {
				keep = append(keep, k, v)
			}
		}
		n.Content = keep
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.bad(n, key, "%s is not a list: write [a, b] or one \"- item\" per line", describe(n))
			return false
		}
		var keep []*yaml.Node
		for i, el := range n.Content {
			path := fmt.Sprintf("%s[%d]", key, i)
			w.lines[path] = el.Line
			if w.walk(el, t.Elem(), path) {
				keep = append(keep, el)
			}
		}
		n.Content = keep
	}
	return true
}

// duplicate reports a key set a second time in the same mapping.
func (w *walker) duplicate(k *yaml.Node, path string) bool {
	first, ok := w.lines[path]
	if !ok {
		return false
	}
	w.bad(k, path, "is set again (first on line %d): set each key once", first)
	return true
}

func isScalar(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return fmt.Sprintf("%q", n.Value)
}

// typeMessage says why n is not a value of type t, in words for the
// operator: the value and what to write instead.
func typeMessage(t reflect.Type, n *yaml.Node, err error) string {
	v := describe(n)
	if n.Kind != yaml.ScalarNode {
		return fmt.Sprintf("%s is not a single value: write one value on the key's line", v)
	}
	switch {
	case t == durationType:
		return fmt.Sprintf("%s is not a duration: use Go syntax like 5m or 30s", v)
	case t == byteSizeType:
		return fmt.Sprintf("%s is not a size: use bytes or a unit, like 65536, 64KiB, 16MiB or 1GiB", v)
	}
	switch t.Kind() {
	case reflect.Bool:
		return fmt.Sprintf("%s is not a boolean: use true or false", v)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return fmt.Sprintf("%s is not a whole number: use digits, like 3", v)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprintf("%s is not a whole number of 0 or more: use digits, like 3", v)
	case reflect.Float32, reflect.Float64:
		return fmt.Sprintf("%s is not a number: use digits, like 0.5", v)
	case reflect.String:
		return fmt.Sprintf("%s is not text: quote it", v)
	}
	return fmt.Sprintf("%s: %v", v, err)
}

func fieldNames(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "-" && name != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// didYouMean returns "(did you mean K?)" for the known key closest to name, or
// the list of known keys when none is close.
func didYouMean(name string, known []string) string {
	if k, ok := suggest.Closest(name, known); ok {
		return fmt.Sprintf("(did you mean %s?)", k)
	}
	return fmt.Sprintf("(the keys here are %s)", strings.Join(known, ", "))
}
