package auth

import (
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSetup makes a devices file with fridge-7 and fridge-8 and returns an
// Authenticator over it with fridge-7's token.
func fuzzSetup(f *testing.F) (*Authenticator, string, string) {
	dir := f.TempDir()
	devices := filepath.Join(dir, "devices.yaml")
	tok, err := addDevice(devices, "fridge-7", []string{"temperature"}, testParams)
	if err != nil {
		f.Fatal(err)
	}
	other, err := addDevice(devices, "fridge-8", nil, testParams)
	if err != nil {
		f.Fatal(err)
	}
	a, err := New(Options{Devices: devices})
	if err != nil {
		f.Fatal(err)
	}
	return a, tok, other
}

// FuzzBearer: an Authorization header is accepted only when it carries a
// device's own token, and nothing panics.
func FuzzBearer(f *testing.F) {
	a, tok, other := fuzzSetup(f)
	for _, s := range []string{
		"", "Bearer", "Bearer ", "Bearer " + tok, "bearer " + tok, "Bearer  " + tok + " ",
		"Bearer " + other, "Basic " + tok, "Bearer " + tok + "x", "Bearer " + tok[:len(tok)-1] + "a",
		"Bearer " + strings.Replace(tok, "hfd_", "hft_", 1), "Bearer " + strings.ToUpper(tok),
		"Bearer hfd_" + strings.Repeat("_", TokenLen-4), "Bearer \x00" + tok,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		token, err := ParseBearer(header)
		if err != nil {
			if token != "" {
				t.Fatalf("ParseBearer(%q) returned %q with %v", header, token, err)
			}
			return
		}
		d, err := a.Device(token)
		if err != nil {
			if !IsRejection(err) {
				t.Fatalf("Device(%q): %v is not a rejection", token, err)
			}
			return
		}
		switch {
		case token == tok && d.ID == "fridge-7":
		case token == other && d.ID == "fridge-8":
		default:
			t.Fatalf("header %q accepted as %q", header, d.ID)
		}
	})
}

// FuzzMQTTCredentials: a CONNECT's username and password are accepted only
// when the password is the username's own token.
func FuzzMQTTCredentials(f *testing.F) {
	a, tok, other := fuzzSetup(f)
	for _, c := range [][2]string{
		{"fridge-7", tok}, {"fridge-8", tok}, {"fridge-8", other}, {"", tok}, {"fridge-7", ""},
		{"fridge-7", other}, {"fridge-7 ", tok}, {"fridge-7\x00", tok}, {"FRIDGE-7", tok},
		{"fridge-7", tok + "\n"}, {"fridge-7", strings.Replace(tok, "hfd_", "hft_", 1)},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, username, password string) {
		d, err := a.DeviceLogin(username, password)
		if err != nil {
			if !IsRejection(err) {
				t.Fatalf("DeviceLogin(%q, %q): %v is not a rejection", username, password, err)
			}
			return
		}
		ok := (username == "fridge-7" && password == tok) || (username == "fridge-8" && password == other)
		if !ok || d.ID != username {
			t.Fatalf("DeviceLogin(%q, %q) accepted as %q", username, password, d.ID)
		}
	})
}
