package alert

import (
	"reflect"
	"testing"
)

func TestBoard(t *testing.T) {
	b := NewBoard()
	a1 := Alert{ID: "sink-offline/cloud/1", Rule: "sink-offline", Severity: Warning, State: Firing, FiredAt: 1}
	a2 := Alert{ID: "buffer-pressure/warning/2", Rule: "buffer-pressure", Severity: Critical, State: Firing, FiredAt: 2}
	b.Record(a1)
	b.Record(a2)
	if got := b.List("firing", ""); !reflect.DeepEqual(got, []Alert{a2, a1}) {
		t.Fatalf("firing %+v", got)
	}
	r1 := a1
	r1.State, r1.ResolvedAt = Resolved, 3
	b.Record(r1)
	if got := b.List("firing", ""); !reflect.DeepEqual(got, []Alert{a2}) {
		t.Fatalf("firing after the resolve %+v", got)
	}
	if got := b.List("", ""); !reflect.DeepEqual(got, []Alert{a2, r1}) {
		t.Fatalf("all %+v", got)
	}
	if got := b.List("", "warning"); !reflect.DeepEqual(got, []Alert{r1}) {
		t.Fatalf("warnings %+v", got)
	}
	for range boardResolved + 10 {
		b.Record(r1)
	}
	if n := len(b.List("resolved", "")); n != boardResolved {
		t.Fatalf("%d resolved kept", n)
	}
}
