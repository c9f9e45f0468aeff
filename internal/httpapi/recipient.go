package httpapi

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/events"
	"github.com/sharelinks/sharelinks/internal/link"
)

// AccessCookie carries the recipient's access token, scoped to one link.
const AccessCookie = "sl_access"

// RecipientActor is the recipient as the audit trail records them: IP and
// user agent (truncated), never anything from the URL.
func RecipientActor(r *http.Request) events.Actor {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	ua := r.UserAgent()
	if len(ua) > 512 {
		ua = ua[:512]
	}
	return events.Actor{Type: "recipient", IP: ip, UserAgent: ua}
}

func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

func (s *Server) landing(w http.ResponseWriter, r *http.Request) error {
	if !wantsJSON(r) && s.cfg.Pages != nil {
		return s.cfg.Pages.Landing(w, r)
	}
	l, err := s.svc.Resolve(r.Context(), r.PathValue("token"))
	if err != nil {
		return err
	}
	resp := map[string]any{
		"title": l.Title, "message": l.Message, "link_type": l.LinkType,
		"auth_type": l.AuthType, "expires_at": l.ExpiresAt.UTC(),
	}
	if d := l.Destination(); d != "" {
		resp["destination"] = d
	}
	if p := s.svc.OTPPolicy(l); p != nil {
		resp["otp_policy"] = p // what a code will be: its length, life, attempts and resend wait
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Password string `json:"password"`
		Code     string `json:"code"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	token := r.PathValue("token")
	acc, err := s.svc.Verify(r.Context(), token, link.VerifyInput{Password: body.Password, Code: body.Code}, RecipientActor(r))
	if res := OTPVerifyResult(err); body.Code != "" && res != "" {
		s.metrics.OTPVerification(res)
	}
	if err != nil {
		return err
	}
	s.setAccessCookie(w, token, acc.Token, acc.ExpiresIn)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": acc.Token, "token_type": "Bearer", "expires_in": int(acc.ExpiresIn / time.Second),
	})
	return nil
}

func (s *Server) setAccessCookie(w http.ResponseWriter, token, access string, ttl time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: AccessCookie, Value: access, Path: "/s/" + token, MaxAge: int(ttl / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: s.secure,
	})
}

// accessToken reads the access token from the Authorization header or the cookie.
func accessToken(r *http.Request) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if c, err := r.Cookie(AccessCookie); err == nil {
		return c.Value
	}
	return ""
}

func (s *Server) targets(w http.ResponseWriter, r *http.Request) error {
	l, err := s.svc.SessionLink(r.Context(), r.PathValue("token"), accessToken(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"link_type": l.LinkType, "targets": l.Targets})
	return nil
}

func (s *Server) open(w http.ResponseWriter, r *http.Request) error {
	token, target := r.PathValue("token"), r.URL.Query().Get("target")
	var o link.Opened
	var err error
	if at := accessToken(r); at != "" {
		o, err = s.svc.Open(r.Context(), token, at, target, RecipientActor(r))
	} else {
		o, err = s.svc.OpenDirect(r.Context(), token, target, RecipientActor(r))
	}
	if err != nil {
		return err
	}
	if o.Redirect != "" {
		http.Redirect(w, r, o.Redirect, http.StatusFound)
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"grant": o.Grant.Token, "target": o.Target})
	return nil
}

// OTPVerifyResult is the sharelinks_otp_verifications_total result of a
// code verify's outcome, or "" when the code was never judged (the
// database could not be reached, or the service failed): not counted.
func OTPVerifyResult(err error) string {
	if err == nil {
		return "ok"
	}
	e := AsAppError(err)
	switch {
	case e == nil || e.Code == apperr.Unavailable:
		return ""
	case e.Reason == "code_locked":
		return "locked"
	case e.Reason == "code_expired":
		return "expired"
	}
	return "bad_code"
}

// OTPRequestResult is the sharelinks_otp_requests_total result of a code
// request's outcome, or "" for an outcome it does not count (no such
// link, a link without codes, an internal error).
func OTPRequestResult(err error) string {
	if err == nil {
		return "accepted"
	}
	switch apperr.CodeOf(err) {
	case apperr.TooMany:
		return "throttled"
	case apperr.Upstream:
		return "failed_send"
	}
	return ""
}

func (s *Server) requestOTP(w http.ResponseWriter, r *http.Request) error {
	sent, err := s.svc.RequestOTP(r.Context(), r.PathValue("token"), RecipientActor(r))
	if res := OTPRequestResult(err); res != "" {
		s.metrics.OTPRequest(res)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, map[string]any{
		"sent_to": sent.SentTo, "resend_after": int(sent.ResendAfter / time.Second),
	})
	return nil
}
