package config

import "math"

// Limits are per-device rate limits on ingest (issue 15). Over its limit a
// device's events are refused with HTTP 429 and Retry-After or MQTT 5 reason
// 0x97 (quota exceeded; the connection is then read again once the device
// has a token), nothing stored; an MQTT 3.1.1 device, which has no
// negative ack, has its acks held until it is back under the limit, so it is
// slowed, nothing lost. Refused events are counted in
// holdfast_rate_limited_events_total, not in the loss ledger: the device
// still has them. A device over its limit in the last minute is a
// device_burst hot spot in /v1/status.
type Limits struct {
	// DeviceRate is the events per second each device may send (a token
	// bucket per device id); 0 turns the limit off.
	DeviceRate float64 `yaml:"device_rate"`
	// DeviceBurst is the bucket size: how many events a device may send at
	// once above its rate; 0 = max(1, device_rate).
	DeviceBurst int `yaml:"device_burst"`
}

// Burst is DeviceBurst with its default filled in (0 when the limit is off).
func (l Limits) Burst() int {
	switch {
	case l.DeviceRate <= 0:
		return 0
	case l.DeviceBurst > 0:
		return l.DeviceBurst
	}
	return max(1, int(math.Ceil(l.DeviceRate)))
}

func (l Limits) validate(bad func(key, format string, args ...any)) {
	if l.DeviceRate < 0 || math.IsNaN(l.DeviceRate) || math.IsInf(l.DeviceRate, 0) {
		bad("limits.device_rate", "%v must be 0 (no limit) or a positive number of events per second", l.DeviceRate)
	}
	if l.DeviceBurst < 0 {
		bad("limits.device_burst", "%d must be 0 (the default, max(1, device_rate)) or more", l.DeviceBurst)
	}
}
