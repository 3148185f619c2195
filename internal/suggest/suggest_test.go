package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"http", "http", 0}, {"htpp", "http", 1}, {"intervall", "interval", 1},
		{"", "abc", 3}, {"devce_id", "device_id", 1}, {"kitten", "sitting", 3},
	} {
		if got := Distance(c.a, c.b); got != c.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestClosest(t *testing.T) {
	known := []string{"device_id", "stream", "from", "to", "limit", "cursor"}
	if got, ok := Closest("devce_id", known); !ok || got != "device_id" {
		t.Errorf("devce_id: %q %v", got, ok)
	}
	if got, ok := Closest("Stream", known); !ok || got != "stream" {
		t.Errorf("Stream: %q %v", got, ok)
	}
	if got, ok := Closest("verbosity", known); ok {
		t.Errorf("verbosity is near nothing, got %q", got)
	}
}
