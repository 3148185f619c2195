package window

// DropStream removes everything the Engine holds for the stream and returns
// the number of open windows it had; ok is false if the Engine does not hold
// it. With AppendStreamState before and RestoreStream after, it takes a
// stream out of the Engine and puts it back (the processor's spilling of
// window state to disk): the Engine then continues exactly as if the stream
// had stayed, provided nothing was added to or advanced for the stream in
// between, and the split-stream mark (SetNoSite), which the state does not
// carry, is set again. It applies pending updates first; it must not be
// called from OnClose.
func (e *Engine) DropStream(streamName string) (open int, ok bool) {
	if e.closing {
		panic("window: DropStream called from OnClose")
	}
	s := e.streams[streamName]
	if s == nil {
		return 0, false
	}
	e.flush()
	open = streamOpen(s)
	delete(e.streams, streamName)
	if e.last == s {
		e.last = nil
	}
	e.open -= open
	return open, true
}

// StreamOpenWindows returns the number of the stream's open windows, device
// and site-wide, over all sizes.
func (e *Engine) StreamOpenWindows(streamName string) int {
	s := e.streams[streamName]
	if s == nil {
		return 0
	}
	e.flush()
	return streamOpen(s)
}

func streamOpen(s *stream) int {
	open := s.site.open
	s.keys.all(func(k *key) { open += k.open })
	return open
}
