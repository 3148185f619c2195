package api

import (
	"errors"
	"net/http"

	"github.com/holdfast-edge/holdfast/internal/auth"
)

// RequireRole is needRole for routes the node adds beside the API's own
// (an HA primary's step-down).
func RequireRole(g *auth.Guard, need auth.Role, h http.Handler) http.Handler {
	return needRole(g, need, h)
}

// needRole wraps h so that it answers only requests with an API token whose
// role allows need; with no Guard (auth off) it is h.
//
// The token comes as `Authorization: Bearer TOKEN`, or as the password of
// HTTP basic authentication (any user name): that is how a browser opens the
// status page, whose 401 asks for it. Device tokens never read (403).
func needRole(g *auth.Guard, need auth.Role, h http.Handler) http.Handler {
	if g == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var err error
		if _, pass, ok := r.BasicAuth(); ok {
			_, err = g.API(r.RemoteAddr, pass, need)
		} else if tok, perr := auth.ParseBearer(r.Header.Get("Authorization")); perr != nil {
			err = g.Refuse(r.RemoteAddr, perr)
		} else {
			_, err = g.API(r.RemoteAddr, tok, need)
		}
		if err == nil {
			h.ServeHTTP(w, r)
			return
		}
		switch {
		case errors.Is(err, auth.ErrRateLimited):
			w.Header().Set("Retry-After", "60")
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many failed authentications from this address; retry later"})
		case errors.Is(err, auth.ErrWrongKind):
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "a device token cannot use the API: send an API token (holdfast token add)"})
		case errors.Is(err, auth.ErrForbidden):
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "this token's role may not do this: it needs " + string(need)})
		default:
			w.Header().Add("WWW-Authenticate", `Bearer realm="holdfast"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="holdfast", charset="UTF-8"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized (" + auth.Reason(err) + "): send Authorization: Bearer <API token>"})
		}
	})
}
