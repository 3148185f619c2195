package httpin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/holdfast-edge/holdfast/internal/auth"
	"github.com/holdfast-edge/holdfast/internal/event"
)

// deviceID is the device a request was authenticated as, and how.
type deviceID struct {
	auth.Device
	byCert bool
}

// authenticate finds the device a request comes from. An Authorization header,
// when there is one, decides: a wrong token is refused even on a connection
// with a valid client certificate. Without one, a verified client
// certificate (the listener asks for one when security.tls.client_ca is set)
// names the device by its CN, or else a DNS SAN (auth.Guard.DeviceCert: an
// active device of the devices file, or any name without one).
func (h *Handler) authenticate(r *http.Request) (deviceID, error) {
	g := h.opts.Auth
	hdr := r.Header.Get("Authorization")
	if hdr == "" && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		d, err := g.DeviceCert(r.RemoteAddr, "", r.TLS.PeerCertificates[0])
		return deviceID{d, true}, err
	}
	tok, err := auth.ParseBearer(hdr)
	if err != nil {
		return deviceID{}, g.Refuse(r.RemoteAddr, err)
	}
	d, err := g.Device(r.RemoteAddr, tok)
	return deviceID{Device: d}, err
}

// refuse answers a request whose credentials were refused: 429 when its
// source has failed too often, 403 for an API token (valid or not, it never
// ingests), 401 otherwise. Nothing of the body is read.
func (h *Handler) refuse(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, auth.ErrRateLimited):
		w.Header().Set("Retry-After", "60")
		h.fail(w, http.StatusTooManyRequests, "", "too many failed authentications from this address; retry later")
	case errors.Is(err, auth.ErrWrongKind):
		h.fail(w, http.StatusForbidden, "", "an API token cannot ingest: send a device token (holdfast device add)")
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="holdfast"`)
		h.fail(w, http.StatusUnauthorized, "", "unauthorized (%s): send Authorization: Bearer <device token>", auth.Reason(err))
	}
}

// explain is the rejection of one event the device may not send.
func (d *deviceID) explain(ev event.Event, err error) string {
	what := "token"
	if d.byCert {
		what = "client certificate"
	}
	if errors.Is(err, auth.ErrWrongDevice) {
		return fmt.Sprintf("device_id %q: this %s is for device %q", ev.DeviceID, what, d.ID)
	}
	return fmt.Sprintf("stream %q: device %q may not send it (its streams: %v)", ev.Stream, d.ID, d.Streams)
}
