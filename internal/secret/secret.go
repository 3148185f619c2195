// Package secret finds and redacts the secrets in configuration values, so that
// a config can be published (to the cloud's config registry) or shown without
// them, and a redacted config is recognised when it comes back.
//
// A secret is marked by a struct tag on the field that holds it:
//
//	Password string            `yaml:"password" secret:"true"` // the whole value
//	Headers  map[string]string `yaml:"headers" secret:"true"`  // every value (not the names)
//	Tokens   []string          `yaml:"tokens" secret:"true"`   // every element
//	URL      string            `yaml:"url" secret:"url"`       // the userinfo password and every query value
//
// Redact replaces each non-empty secret with Marker; Find lists the keys (in
// YAML notation, alerts.notify.webhooks[0].headers.Authorization) that still
// hold the marker. A field added later needs only the tag.
package secret

import (
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
)

// Marker replaces a secret's value.
const Marker = "<redacted>"

// escapedMarker is Marker inside a URL (userinfo or query).
const escapedMarker = "%3Credacted%3E"

// Tag values of the `secret` struct tag.
const (
	tagWhole = "true"
	tagURL   = "url"
)

// Redact returns a deep copy of v with every tagged secret replaced by Marker.
// v itself, and anything it points to, is left unchanged.
func Redact[T any](v T) T {
	rv := reflect.ValueOf(&v).Elem()
	out := redact(rv, "")
	return out.Interface().(T)
}

func redact(v reflect.Value, tag string) reflect.Value {
	switch v.Kind() {
	case reflect.String:
		if v.Len() == 0 {
			return v
		}
		switch tag {
		case tagWhole:
			return stringOf(v.Type(), Marker)
		case tagURL:
			return stringOf(v.Type(), RedactURL(v.String()))
		}
		return v
	case reflect.Struct:
		out := reflect.New(v.Type()).Elem()
		out.Set(v)
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			out.Field(i).Set(redact(v.Field(i), f.Tag.Get("secret")))
		}
		return out
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type().Elem())
		out.Elem().Set(redact(v.Elem(), tag))
		return out
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			out.Index(i).Set(redact(v.Index(i), tag))
		}
		return out
	case reflect.Array:
		out := reflect.New(v.Type()).Elem()
		for i := 0; i < v.Len(); i++ {
			out.Index(i).Set(redact(v.Index(i), tag))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(v.Type(), v.Len())
		for it := v.MapRange(); it.Next(); {
			out.SetMapIndex(it.Key(), redact(it.Value(), tag))
		}
		return out
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		out := reflect.New(v.Type()).Elem()
		out.Set(redact(v.Elem(), tag))
		return out
	}
	return v
}

func stringOf(t reflect.Type, s string) reflect.Value {
	return reflect.ValueOf(s).Convert(t)
}

// RedactURL returns s with the password of its userinfo and the value of
// every query parameter replaced by Marker; a URL with neither is returned
// unchanged. A string that does not parse as a URL becomes Marker if it holds
// '@' or '?' (it may carry credentials), else is returned unchanged.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.ContainsAny(s, "@?") {
			return Marker
		}
		return s
	}
	changed := false
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), Marker)
			changed = true
		}
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k, vs := range q {
			for i := range vs {
				vs[i] = Marker
			}
			q[k] = vs
		}
		u.RawQuery = q.Encode()
		changed = true
	}
	if !changed {
		return s
	}
	return u.String()
}

// Find returns the keys of v's strings that hold Marker, tagged or not, in
// YAML notation and sorted.
func Find(v any) []string {
	var keys []string
	find(reflect.ValueOf(v), "", &keys)
	slices.Sort(keys)
	return keys
}

func find(v reflect.Value, key string, keys *[]string) {
	switch v.Kind() {
	case reflect.String:
		if s := v.String(); strings.Contains(s, Marker) || strings.Contains(strings.ToUpper(s), strings.ToUpper(escapedMarker)) {
			*keys = append(*keys, key)
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			f := v.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			find(v.Field(i), join(key, name), keys)
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			find(v.Elem(), key, keys)
		}
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			find(v.Index(i), fmt.Sprintf("%s[%d]", key, i), keys)
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			find(it.Value(), join(key, fmt.Sprint(it.Key().Interface())), keys)
		}
	}
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}
