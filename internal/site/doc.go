// Package site is the membership of a holdfast site of several edge nodes and
// the assignment of devices to them. hashicorp/memberlist does membership and
// failure detection (SWIM gossip); buraksezer/consistent does the consistent
// hashing with bounded loads behind the sticky strategy.
package site

import (
	_ "github.com/buraksezer/consistent"
	_ "github.com/hashicorp/memberlist"
)
