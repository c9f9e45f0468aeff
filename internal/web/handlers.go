package web

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/httpapi"
	"github.com/sharelinks/sharelinks/internal/link"
)

// Problems travel from a form post to the page that shows them as a short
// code in the query string (Post/Redirect/Get): never a secret, and unknown
// codes are ignored.
var problems = map[string]string{
	"password":          "That password is not right. Check it and try again.",
	"password_required": "Enter the password to continue.",
	"locked":            "Too many attempts. Wait a while, then try again.",
	"form":              "This page had expired, so nothing was sent. Please try again. (This page needs cookies.)",
	"code_locked":       "Too many wrong codes, so this code no longer works. Ask for a new code.",
	"code_expired":      "That code has expired. Ask for a new code.",
	"code_used":         "That code has already been used. Ask for a new code.",
	"no_code":           "We could not deliver your code. Ask for a new code; if that fails too, ask the person who shared the link to check your address.",
	"code_not_sent":     "Your code is still on its way. Wait a moment, then enter it.",
}

// codeProblems maps the service's reasons for a failed code check to the
// codes above.
var codeProblems = map[string]string{
	"code_locked":         "code_locked",
	"code_expired":        "code_expired",
	"code_used":           "code_used",
	"no_code":             "no_code",
	"code_not_sent":       "code_not_sent",
	"code_required":       "code_required",
	"invalid_code_format": "code_format",
}

// maxCodeWait bounds the resend wait read from a URL: the service's longest
// throttle is an hour.
const maxCodeWait = time.Hour

func (p *Pages) landing(w http.ResponseWriter, r *http.Request) error {
	token := r.PathValue("token")
	ctx := r.Context()
	now := p.now()
	l, err := p.svc.Resolve(ctx, token)
	if err != nil {
		return err
	}
	v := &view{Base: tokenPath(token)}
	v.fill(l, now)
	if l.LockedUntil != nil && l.LockedUntil.After(now) {
		p.renderLocked(w, r, l.LockedUntil.Sub(now))
		return nil
	}
	if at := accessToken(r); at != "" {
		if sl, err := p.svc.SessionLink(ctx, token, at); err == nil {
			v.Step = "verified"
			if it, ok := autoOpen(v.Base, sl); ok {
				v.Single = &it
			}
			p.render(w, r, http.StatusOK, "landing", v)
			return nil
		}
	}
	switch l.AuthType {
	case link.AuthPassword:
		v.Step = "password"
	case link.AuthEmailOTP, link.AuthSMSOTP:
		v.Step = "otp"
		v.Destination = l.Destination()
		v.ByText = l.AuthType == link.AuthSMSOTP
		v.CodeLength = p.svc.OTPPolicy(l).CodeLength
	default:
		v.Step = "open"
	}
	switch e := r.URL.Query().Get("e"); e {
	case "session":
		v.Notice = "Your access has ended. Confirm again to continue."
	default:
		v.Error = problems[e]
	}
	v.CSRF = p.csrfToken(w, r, token)
	p.render(w, r, http.StatusOK, "landing", v)
	return nil
}

// autoOpen is the one file a link shares, when it has a web address: such
// links open straight away instead of listing one item.
func autoOpen(base string, l link.Link) (item, bool) {
	if len(l.Targets) != 1 || l.Targets[0].Type == "folder" || l.Targets[0].URL == "" {
		return item{}, false
	}
	return toItem(base, l.Targets[0]), true
}

func toItem(base string, t link.Target) item {
	it := item{Name: t.Name, Kind: "File", Folder: t.Type == "folder"}
	if it.Name == "" {
		it.Name = t.ID
	}
	if it.Folder {
		it.Kind = "Folder"
	}
	if t.URL != "" {
		it.Href = base + "/go?target=" + url.QueryEscape(t.ID)
	}
	return it
}

func (p *Pages) codePage(w http.ResponseWriter, r *http.Request) error {
	token := r.PathValue("token")
	now := p.now()
	l, err := p.svc.Resolve(r.Context(), token)
	if err != nil {
		return err
	}
	base := tokenPath(token)
	if l.AuthType != link.AuthEmailOTP && l.AuthType != link.AuthSMSOTP {
		redirect(w, r, base)
		return nil
	}
	policy := p.svc.OTPPolicy(l)
	v := &view{Base: base, Destination: l.Destination(), ByText: l.AuthType == link.AuthSMSOTP,
		CodeLife: waitWords(time.Duration(policy.CodeTTL) * time.Second), CodeLength: policy.CodeLength}
	v.fill(l, now)
	v.DocTitle = "Enter your code"
	q := r.URL.Query()
	if at, err := strconv.ParseInt(q.Get("r"), 10, 64); err == nil {
		wait := min(time.Unix(at, 0).Sub(now), maxCodeWait)
		if wait > 0 {
			v.CodeWait = int((wait + time.Second - 1) / time.Second)
			v.WaitWords = waitWords(wait)
		}
	}
	if q.Get("sent") == "1" {
		v.Notice = "Code sent. Earlier codes no longer work."
	}
	switch e := q.Get("e"); e {
	case "code":
		n, _ := strconv.Atoi(q.Get("n"))
		v.Error = "That code is not right."
		if n > 0 && n < 100 {
			v.Error += " You have " + plural(n, "attempt") + " left."
		}
	case "throttled":
		v.Error = "A code was sent a moment ago. You can ask for another when the wait below is over."
		if v.WaitWords == "" {
			v.Error = "A code was sent a moment ago. Try again now."
		}
	case "send_failed":
		v.Error = "We could not deliver the last code to " + v.Destination +
			". Ask for a new code; if that fails too, ask the person who shared the link to check the address."
	case "code_required":
		v.Error = fmt.Sprintf("Enter the %d-digit code we sent you.", policy.CodeLength)
	case "code_format":
		v.Error = fmt.Sprintf("The code is %d digits, like %s.", policy.CodeLength, "1234567890"[:policy.CodeLength])
	default:
		v.Error = problems[e]
	}
	v.CSRF = p.csrfToken(w, r, token)
	p.render(w, r, http.StatusOK, "code", v)
	return nil
}

var attemptsLeft = regexp.MustCompile(`(\d+) attempts? left`)

// unlock is the password, code and open-link form: it verifies, sets the
// access cookie and moves on to the files (or straight to the one file).
func (p *Pages) unlock(w http.ResponseWriter, r *http.Request) error {
	token := r.PathValue("token")
	base := tokenPath(token)
	if err := parseForm(w, r); err != nil {
		return err
	}
	_, isCode := r.PostForm["code"]
	back := base
	if isCode {
		back += "/code"
	}
	if !csrfOK(r) {
		redirect(w, r, back+"?e=form")
		return nil
	}
	in := link.VerifyInput{Password: r.PostFormValue("password"), Code: r.PostFormValue("code")}
	acc, err := p.svc.Verify(r.Context(), token, in, httpapi.RecipientActor(r))
	if isCode {
		p.observeVerify(err)
	}
	if err != nil {
		e, ok := apperr.As(err)
		if !ok {
			return err
		}
		switch e.Reason {
		case "link_not_found", "too_many_attempts":
			// The landing page shows the dead link or the lockout with its wait.
			redirect(w, r, base+"?e=locked")
		case "invalid_password":
			redirect(w, r, back+"?e=password")
		case "password_required":
			redirect(w, r, back+"?e=password_required")
		case "invalid_code":
			q := "?e=code"
			if m := attemptsLeft.FindStringSubmatch(e.Message); m != nil {
				q += "&n=" + m[1]
			}
			redirect(w, r, back+q)
		default:
			code, ok := codeProblems[e.Reason]
			if !ok {
				return err
			}
			redirect(w, r, back+"?e="+code)
		}
		return nil
	}
	p.setAccessCookie(w, token, acc)
	to := base + "/files"
	if _, ok := autoOpen(base, acc.Link); ok {
		to += "?open=1"
	}
	redirect(w, r, to)
	return nil
}

func (p *Pages) observeVerify(err error) {
	if res := httpapi.OTPVerifyResult(err); p.obs != nil && res != "" {
		p.obs.OTPVerification(res)
	}
}

// sendCode asks for a one-time code and shows the code form with the wait
// before another may be asked for.
func (p *Pages) sendCode(w http.ResponseWriter, r *http.Request) error {
	token := r.PathValue("token")
	base := tokenPath(token)
	if err := parseForm(w, r); err != nil {
		return err
	}
	if !csrfOK(r) {
		redirect(w, r, base+"?e=form")
		return nil
	}
	// Rounded up: a page without JavaScript must not invite an early click.
	at := func(d time.Duration) string { return strconv.FormatInt(p.now().Add(d+time.Second-1).Unix(), 10) }
	sent, err := p.svc.RequestOTP(r.Context(), token, httpapi.RecipientActor(r))
	if res := httpapi.OTPRequestResult(err); p.obs != nil && res != "" {
		p.obs.OTPRequest(res)
	}
	e, _ := apperr.As(err)
	switch {
	case err == nil:
		redirect(w, r, base+"/code?sent=1&r="+at(sent.ResendAfter))
	case e == nil:
		return err
	case e.Reason == "otp_throttled":
		redirect(w, r, base+"/code?e=throttled&r="+at(e.RetryAfter))
	case e.Reason == "otp_send_failed":
		redirect(w, r, base+"/code?e=send_failed&r="+at(e.RetryAfter))
	case e.Reason == "link_not_found" || e.Reason == "not_otp_link":
		redirect(w, r, base)
	default:
		return err
	}
	return nil
}

// filesPage lists what a verified recipient may open, or opens the one
// file right after verification.
func (p *Pages) filesPage(w http.ResponseWriter, r *http.Request) error {
	token := r.PathValue("token")
	base := tokenPath(token)
	l, err := p.svc.SessionLink(r.Context(), token, accessToken(r))
	if apperr.CodeOf(err) == apperr.Unauthorized {
		to := base
		if accessToken(r) != "" {
			to += "?e=session"
		}
		redirect(w, r, to)
		return nil
	}
	if err != nil {
		return err
	}
	v := &view{Base: base}
	v.fill(l, p.now())
	if it, ok := autoOpen(base, l); ok && r.URL.Query().Get("open") == "1" {
		// A meta refresh, not a redirect from the form post: form-action
		// 'self' would block the post's redirect chain from leaving for the
		// owner's storage, while a page's own navigation is allowed.
		v.DocTitle = "Opening " + it.Name
		v.Opening = &it
		v.Refresh = it.Href
		p.render(w, r, http.StatusOK, "opening", v)
		return nil
	}
	for _, t := range l.Targets {
		v.Items = append(v.Items, toItem(base, t))
	}
	p.render(w, r, http.StatusOK, "files", v)
	return nil
}

// open issues a grant for one target and sends the browser to it.
func (p *Pages) open(w http.ResponseWriter, r *http.Request) error {
	token := r.PathValue("token")
	base := tokenPath(token)
	o, err := p.svc.Open(r.Context(), token, accessToken(r), r.URL.Query().Get("target"), httpapi.RecipientActor(r))
	if err != nil {
		e, ok := apperr.As(err)
		switch {
		case ok && e.Reason == "access_required":
			to := base
			if accessToken(r) != "" {
				to += "?e=session"
			}
			redirect(w, r, to)
			return nil
		case ok && (e.Reason == "target_required" || e.Reason == "target_not_found"):
			redirect(w, r, base+"/files")
			return nil
		}
		return err
	}
	if o.Redirect == "" {
		redirect(w, r, base+"/files")
		return nil
	}
	http.Redirect(w, r, o.Redirect, http.StatusFound)
	return nil
}
