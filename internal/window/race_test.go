//go:build race

package window

// raceEnabled shortens the slowest tests under the race detector, which has
// nothing to find in this single-goroutine package beyond what they cover.
const raceEnabled = true
