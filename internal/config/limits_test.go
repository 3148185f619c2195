package config

import (
	"strings"
	"testing"
)

func TestLimits(t *testing.T) {
	cfg, err := Parse([]byte("limits:\n  device_rate: 2.5\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.DeviceRate != 2.5 || cfg.Limits.Burst() != 3 {
		t.Fatalf("limits %+v burst %d, want rate 2.5 burst 3", cfg.Limits, cfg.Limits.Burst())
	}
	if b := (Limits{DeviceRate: 10, DeviceBurst: 50}).Burst(); b != 50 {
		t.Fatalf("burst %d, want 50", b)
	}
	if b := Default().Limits.Burst(); b != 0 {
		t.Fatalf("off by default: burst %d", b)
	}
	cfg, err = Parse([]byte("limits:\n  device_rate: -1\n  device_burst: -2\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	for _, key := range []string{"limits.device_rate", "limits.device_burst"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Fatalf("want a problem naming %s, got %v", key, err)
		}
	}
}
