// Package site is the membership of a holdfast site of several edge nodes and
// the assignment of devices to them.
package site
