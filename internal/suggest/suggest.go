// Package suggest finds the name a user probably meant: the known name
// closest to a mistyped one, for "did you mean" in config and query errors.
package suggest

import "strings"

// Closest returns the known name nearest to name by edit distance (case
// ignored), and whether it is near enough to be a likely typo: at most two
// edits, or a third of name's length.
func Closest(name string, known []string) (string, bool) {
	best, bestD := "", -1
	for _, k := range known {
		if d := Distance(strings.ToLower(name), strings.ToLower(k)); bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	return best, bestD >= 0 && (bestD <= 2 || bestD <= len(name)/3)
}

// Distance is the Levenshtein distance between a and b, in bytes.
func Distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
