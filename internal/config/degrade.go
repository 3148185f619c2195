package config

import "github.com/holdfast-edge/holdfast/internal/degrade"

// Degradation configures the degradation levels (normal, degraded, limited,
// minimal, emergency) and the seed's scaling triggers (DESIGN §7,
// docs/OPERATIONS.md "Degradation levels and triggers").
type Degradation = degrade.Options

func (c Config) validateDegradation(bad func(key, format string, args ...any)) {
	if err := c.Degradation.Validate(); err != nil {
		bad("degradation", "%v", err)
	}
}
