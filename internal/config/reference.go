package config

import (
	"embed"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/holdfast-edge/holdfast/internal/alert"
	"github.com/holdfast-edge/holdfast/internal/degrade"
	"github.com/holdfast-edge/holdfast/internal/pressure"
)

// source is this package's Go source, for the doc comments of the fields.
//
//go:embed *.go
var source embed.FS

// ReferenceCommand regenerates docs/CONFIG.md from a clone's root.
const ReferenceCommand = "go run ./cmd/holdfast config reference > docs/CONFIG.md"

// referenceHost stands for the host name in the defaults the reference
// shows, so that it reads the same on every machine.
const referenceHost = "HOSTNAME"

// Reference returns the config reference in markdown (docs/CONFIG.md): every
// key of Config as a dotted path, with its type, its default (Default's; a
// secret's is shown empty) and the doc comment of its field. It is generated
// from the structs and their source, so it cannot drift from them.
func Reference() string {
	s, err := reference()
	if err != nil {
		// The source is embedded in the binary: a missing declaration is a
		// bug of this package, caught by its tests.
		panic(err)
	}
	return s
}

// refRow is one key of the reference.
type refRow struct {
	key, typ, def, doc string
}

func reference() (string, error) {
	docs, err := parseDocs(map[string]fs.FS{"config": source, "alert": alert.Source, "pressure": pressure.Source, "degrade": degrade.Source})
	if err != nil {
		return "", err
	}
	w := &refWalker{docs: docs}
	def := defaultsFor(referenceHost)
	v := reflect.ValueOf(def)
	t := v.Type()

	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("<!-- Generated from the config structs in internal/config by `holdfast config reference`. Do not edit. -->\n\n")
	fmt.Fprintf(&b, "Generated from the config structs (internal/config) and their doc comments; do not edit by hand. Regenerate it with:\n\n```sh\n%s\n```\n\n", ReferenceCommand)
	b.WriteString("Every key is optional: a key left out takes the default shown, which is what\n" +
		"`holdfast run` uses with no file (`holdfast config print` shows the effective\n" +
		"config; flags override the file). Types: a **duration** is Go syntax (`500ms`,\n" +
		"`30s`, `5m`, `1h`); a **size** is bytes, or a number with a unit (`64KiB`,\n" +
		"`16MiB`, `1GiB`; `KB`, `MB`, `GB` are powers of 1000). A key ending in `[]`\n" +
		"is a field of each element of a list; `<name>` stands for a map key.\n" +
		"Secrets have no default and are shown empty. `" + referenceHost + "` stands for the host name.\n" +
		"`holdfast config init` writes a commented example (internal/config/example.yaml).\n\n")

	// Top-level scalar keys first, then one section per top-level object.
	var top []refRow
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || isSection(f.Type) {
			continue
		}
		top = append(top, w.leaf(t, f, v.Field(i), "", ""))
	}
	writeTable(&b, "Top level", "", top)
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || !isSection(f.Type) {
			continue
		}
		rows := w.walk(t, f, v.Field(i), "", "")
		if w.err != nil {
			return "", w.err
		}
		// The section's first row is the section itself: its doc heads
		// the section.
		writeTable(&b, name, rows[0].doc, rows[1:])
	}
	if w.err != nil {
		return "", w.err
	}
	return b.String(), nil
}

func writeTable(b *strings.Builder, title, doc string, rows []refRow) {
	fmt.Fprintf(b, "## %s\n\n", title)
	if doc != "" {
		b.WriteString(doc + "\n\n")
	}
	b.WriteString("| key | type | default | description |\n|---|---|---|---|\n")
	for _, r := range rows {
		def := ""
		if r.def != "" {
			def = "`" + r.def + "`"
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", r.key, r.typ, cell(def), cell(r.doc))
	}
	b.WriteString("\n")
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// isSection says whether a top-level field gets a section of its own.
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct || t.Kind() == reflect.Map && isObject(t.Elem())
}

// isObject says whether t is a YAML mapping of fixed keys (a struct).
func isObject(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

type refWalker struct {
	docs map[string]*typeDocs
	err  error
}

// walk returns the rows of field f (of struct type parent, value v) and,
// for an object, of every key below it. prefix is the parent's key ("" at
// the top), parentDoc the doc comment of the field holding the parent.
func (w *refWalker) walk(parent reflect.Type, f reflect.StructField, v reflect.Value, prefix, parentDoc string) []refRow {
	key := yamlName(f)
	if prefix != "" {
		key = prefix + "." + key
	}
	ft := f.Type
	// An object's row has its field's own comment, else its type's.
	objectRow := func(typ string, elem reflect.Type) refRow {
		doc := w.ownDoc(parent, f)
		if doc == "" {
			doc = w.typeDoc(elem)
		}
		return refRow{key: key, typ: typ, doc: doc}
	}
	switch {
	case isObject(ft):
		st := ft
		if st.Kind() == reflect.Pointer {
			st = st.Elem()
		}
		row := objectRow("object", st)
		if ft.Kind() == reflect.Pointer {
			row.typ = "object, optional"
			if v.IsNil() {
				row.def = "unset"
				v = withDefaults(reflect.New(st).Elem())
			} else {
				v = v.Elem()
			}
		}
		return append([]refRow{row}, w.fields(st, v, key, w.rawDoc(parent, f))...)
	case ft.Kind() == reflect.Slice && isObject(ft.Elem()):
		row := objectRow("list of objects", ft.Elem())
		row.def = formatValue(v, false)
		elem := withDefaults(reflect.New(ft.Elem()).Elem())
		return append([]refRow{row}, w.fields(ft.Elem(), elem, key+"[]", "")...)
	case ft.Kind() == reflect.Map && isObject(ft.Elem()):
		row := objectRow("map of name to object", ft.Elem())
		elem := withDefaults(reflect.New(ft.Elem()).Elem())
		return append([]refRow{row}, w.fields(ft.Elem(), elem, key+".<name>", "")...)
	}
	return []refRow{w.leaf(parent, f, v, prefix, parentDoc)}
}

func (w *refWalker) fields(st reflect.Type, v reflect.Value, prefix, parentDoc string) []refRow {
	var rows []refRow
	for i := range st.NumField() {
		f := st.Field(i)
		if yamlName(f) == "" {
			continue
		}
		rows = append(rows, w.walk(st, f, v.Field(i), prefix, parentDoc)...)
	}
	return rows
}

func (w *refWalker) leaf(parent reflect.Type, f reflect.StructField, v reflect.Value, prefix, parentDoc string) refRow {
	key := yamlName(f)
	if prefix != "" {
		key = prefix + "." + key
	}
	return refRow{key: key, typ: typeName(f.Type), def: formatValue(v, f.Tag.Get("secret") != ""),
		doc: w.leafDoc(parent, f, prefix, parentDoc)}
}

// withDefaults returns v with its WithDefaults method applied, if its type
// has one: the defaults a list element or an optional object takes.
func withDefaults(v reflect.Value) reflect.Value {
	m := v.MethodByName("WithDefaults")
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 || m.Type().Out(0) != v.Type() {
		return v
	}
	return m.Call(nil)[0]
}

// typeName is t in a user's terms.
func typeName(t reflect.Type) string {
	switch t {
	case durationType:
		return "duration"
	case byteSizeType:
		return "size"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		return "list of " + plural(typeName(t.Elem()))
	case reflect.Map:
		return "map of " + typeName(t.Key()) + " to " + typeName(t.Elem())
	}
	return t.String()
}

func plural(s string) string {
	if strings.HasSuffix(s, "s") {
		return s
	}
	return s + "s"
}

// formatValue is v as a YAML value would give it; secret values and zero
// strings are shown empty.
func formatValue(v reflect.Value, secret bool) string {
	if secret {
		return ""
	}
	switch v.Type() {
	case durationType:
		return formatDuration(time.Duration(v.Int()))
	case byteSizeType:
		return formatSize(v.Int())
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return "unset"
		}
		return formatValue(v.Elem(), false)
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Slice:
		if v.Len() == 0 {
			return ""
		}
		var parts []string
		for i := range v.Len() {
			parts = append(parts, formatValue(v.Index(i), false))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		if v.Len() == 0 {
			return ""
		}
		return fmt.Sprint(v.Interface())
	}
	return fmt.Sprint(v.Interface())
}

// formatDuration writes d the short way: 1h rather than 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func formatSize(n int64) string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.mult && n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// typeDocs are one struct type's doc comments.
type typeDocs struct {
	doc    string
	fields map[string]string // Go field name → its doc (or line comment)
	order  []string          // Go field names in declaration order
}

// parseDocs reads the doc comments of every struct type declared in the
// non-test Go files of each package's source, keyed "package.Type".
func parseDocs(pkgs map[string]fs.FS) (map[string]*typeDocs, error) {
	docs := map[string]*typeDocs{}
	fset := token.NewFileSet()
	for pkg, fsys := range pkgs {
		names, err := fs.Glob(fsys, "*.go")
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			src, err := fs.ReadFile(fsys, name)
			if err != nil {
				return nil, err
			}
			file, err := parser.ParseFile(fset, pkg+"/"+name, src, parser.ParseComments)
			if err != nil {
				return nil, err
			}
			for _, decl := range file.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.TYPE {
					continue
				}
				for _, spec := range gd.Specs {
					ts := spec.(*ast.TypeSpec)
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					td := &typeDocs{fields: map[string]string{}}
					td.doc = commentText(ts.Doc)
					if td.doc == "" && len(gd.Specs) == 1 {
						td.doc = commentText(gd.Doc)
					}
					for _, f := range st.Fields.List {
						text := commentText(f.Doc)
						if text == "" {
							text = commentText(f.Comment)
						}
						for _, n := range f.Names {
							td.fields[n.Name] = text
							td.order = append(td.order, n.Name)
						}
					}
					docs[pkg+"."+ts.Name.Name] = td
				}
			}
		}
	}
	return docs, nil
}

// commentText is a comment's first paragraph on one line.
func commentText(g *ast.CommentGroup) string {
	if g == nil {
		return ""
	}
	text, _, _ := strings.Cut(strings.TrimSpace(g.Text()), "\n\n")
	return strings.Join(strings.Fields(text), " ")
}

func (w *refWalker) docsOf(t reflect.Type) *typeDocs {
	td := w.docs[path.Base(t.PkgPath())+"."+t.Name()]
	if td == nil && w.err == nil {
		w.err = fmt.Errorf("config reference: no declaration of %s in the embedded source", t)
	}
	return td
}

func (w *refWalker) typeDoc(t reflect.Type) string {
	td := w.docsOf(t)
	if td == nil {
		return ""
	}
	return keysForNames(t, td.doc)
}

// rawDoc is the doc comment of field f of struct type t, as written.
func (w *refWalker) rawDoc(t reflect.Type, f reflect.StructField) string {
	if td := w.docsOf(t); td != nil {
		return td.fields[f.Name]
	}
	return ""
}

// ownDoc is rawDoc with field names made keys.
func (w *refWalker) ownDoc(t reflect.Type, f reflect.StructField) string {
	return keysForNames(t, w.rawDoc(t, f))
}

// leafDoc is the doc comment of field f of struct type t. A field without
// one takes the comment that names it: the nearest earlier field's ("Listen
// is this member's link address, Peers the other two members'"), which it
// refers to by key, else the one of the field holding t, else t's own.
func (w *refWalker) leafDoc(t reflect.Type, f reflect.StructField, prefix, parentDoc string) string {
	td := w.docsOf(t)
	if td == nil {
		return ""
	}
	if doc := td.fields[f.Name]; doc != "" {
		return keysForNames(t, doc)
	}
	names := regexp.MustCompile(`\b(` + regexp.QuoteMeta(f.Name) + `|(?i:` + regexp.QuoteMeta(yamlName(f)) + `))\b`)
	i := slices.Index(td.order, f.Name)
	for j := i - 1; j >= 0; j-- {
		if d := td.fields[td.order[j]]; d != "" {
			if names.MatchString(d) {
				if sf, ok := t.FieldByName(td.order[j]); ok {
					return "See `" + strings.TrimPrefix(prefix+"."+yamlName(sf), ".") + "`."
				}
			}
			break // only the nearest comment above may speak for this field
		}
	}
	for _, doc := range []string{parentDoc, td.doc} {
		if names.MatchString(doc) {
			return keysForNames(t, doc)
		}
	}
	return ""
}

// keysForNames replaces the Go names of t's fields in doc with their keys.
func keysForNames(t reflect.Type, doc string) string {
	if doc == "" {
		return ""
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" || name == strings.ToLower(f.Name) && len(f.Name) <= 4 && strings.ToUpper(f.Name) == f.Name {
			// An acronym (TLS, CA, URL) reads as well as its key.
			continue
		}
		re := regexp.MustCompile(`\b` + regexp.QuoteMeta(f.Name) + `\b`)
		doc = re.ReplaceAllString(doc, "`"+name+"`")
	}
	return doc
}
