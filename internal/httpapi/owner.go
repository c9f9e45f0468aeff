package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
	"github.com/sharelinks/sharelinks/internal/link"
)

type authenticatorJSON struct {
	AuthType    string `json:"auth_type"`
	AuthContext string `json:"auth_context,omitempty"`
}

type linkJSON struct {
	ID              string            `json:"id"`
	URL             string            `json:"url"`
	Status          string            `json:"status"`
	LinkType        string            `json:"link_type"`
	Targets         []link.Target     `json:"targets"`
	ExpiresAt       time.Time         `json:"expires_at"`
	MaxAccessCount  *int              `json:"max_access_count"`
	AccessCount     int               `json:"access_count"`
	Authenticator   authenticatorJSON `json:"authenticator"`
	Title           string            `json:"title"`
	Message         string            `json:"message"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
	RevokedAt       *time.Time        `json:"revoked_at"`
	LastAccessedAt  *time.Time        `json:"last_accessed_at"`
	AllowedNetworks []string          `json:"allowed_networks"`
	Tags            []string          `json:"tags"`
	NotBefore       *time.Time        `json:"not_before"`
	OTPPolicy       *link.OTPPolicy   `json:"otp_policy,omitempty"`
}

func toLinkJSON(v link.View) linkJSON {
	j := linkJSON{
		ID: v.ID, URL: v.URL, Status: v.Status, LinkType: v.LinkType, Targets: v.Targets,
		ExpiresAt: v.ExpiresAt.UTC(), MaxAccessCount: v.MaxAccessCount, AccessCount: v.AccessCount,
		Authenticator: authenticatorJSON{AuthType: v.AuthType, AuthContext: link.MaskRecipient(v.AuthType, v.Recipient)},
		Title:         v.Title, Message: v.Message, CreatedAt: v.CreatedAt.UTC(), UpdatedAt: v.UpdatedAt.UTC(),
		RevokedAt: v.RevokedAt, LastAccessedAt: v.LastAccessedAt, AllowedNetworks: make([]string, len(v.AllowedNetworks)),
		Tags: v.Tags, NotBefore: v.NotBefore, OTPPolicy: v.OTP,
	}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	for i, p := range v.AllowedNetworks {
		j.AllowedNetworks[i] = p.String()
	}
	return j
}

func toLinksJSON(views []link.View) []linkJSON {
	out := make([]linkJSON, len(views))
	for i, v := range views {
		out[i] = toLinkJSON(v)
	}
	return out
}

func (s *Server) createLinks(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	var body struct {
		Links []link.Spec `json:"links"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	views, replayed, err := s.svc.Create(r.Context(), o, body.Links, r.Header.Get(idempotencyKeyHeader))
	if err != nil {
		return err
	}
	s.markReplayed(w, link.OpCreateLinks, replayed)
	writeJSON(w, http.StatusCreated, map[string]any{"links": toLinksJSON(views)})
	return nil
}

// idempotencyKeyHeader names a create or send so that its retries make
// nothing twice (draft-ietf-httpapi-idempotency-key-header).
const idempotencyKeyHeader = "Idempotency-Key"

// markReplayed tells the client that the answer is an earlier request's
// result, not a new one, as the payment APIs that popularised the header
// do, and counts it.
func (s *Server) markReplayed(w http.ResponseWriter, op string, replayed bool) {
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
		s.metrics.Replays.WithLabelValues(op).Inc()
	}
}

func (s *Server) getLink(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	v, err := s.svc.Get(r.Context(), o, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toLinkJSON(v))
	return nil
}

func (s *Server) updateLink(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	var body struct {
		ExpiresAt       *time.Time      `json:"expires_at"`
		MaxAccessCount  json.RawMessage `json:"max_access_count"` // absent, null (no limit) or a count
		Title           *string         `json:"title"`
		Message         *string         `json:"message"`
		AllowedNetworks *[]string       `json:"allowed_networks"`
		Tags            *[]string       `json:"tags"`
		NotBefore       json.RawMessage `json:"not_before"` // absent, null (open at once) or a time
		OTPPolicy       json.RawMessage `json:"otp_policy"` // absent, null (the defaults) or a policy
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	p := link.Patch{ExpiresAt: body.ExpiresAt, Title: body.Title, Message: body.Message,
		AllowedNetworks: body.AllowedNetworks, Tags: body.Tags}
	if len(body.NotBefore) > 0 {
		p.SetNotBefore = true
		if string(body.NotBefore) != "null" {
			var t time.Time
			if err := json.Unmarshal(body.NotBefore, &t); err != nil {
				return apperr.Field("not_before", "invalid_not_before", "not_before must be an RFC 3339 time, or null to open at once")
			}
			p.NotBefore = &t
		}
	}
	if len(body.OTPPolicy) > 0 {
		p.SetOTPPolicy = true
		if string(body.OTPPolicy) != "null" {
			p.OTPPolicy = new(link.OTPPolicySpec)
			if err := decodeValue(body.OTPPolicy, p.OTPPolicy); err != nil {
				return err
			}
		}
	}
	if len(body.MaxAccessCount) > 0 {
		p.SetMax = true
		if string(body.MaxAccessCount) != "null" {
			var n int
			if err := json.Unmarshal(body.MaxAccessCount, &n); err != nil {
				return apperr.Field("max_access_count", "invalid_max_access_count", "max_access_count must be a whole number, or null for no limit")
			}
			p.MaxAccessCount = &n
		}
	}
	v, err := s.svc.Update(r.Context(), o, r.PathValue("id"), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toLinkJSON(v))
	return nil
}

func (s *Server) listLinks(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	q, err := parseListQuery(r)
	if err != nil {
		return err
	}
	views, count, next, err := s.svc.List(r.Context(), o, q)
	if err != nil {
		return err
	}
	resp := map[string]any{"links": toLinksJSON(views), "count": count}
	if next != nil {
		raw, _ := json.Marshal(next)
		resp["last"] = base64.RawURLEncoding.EncodeToString(raw)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func parseListQuery(r *http.Request) (link.Query, error) {
	v := r.URL.Query()
	for k := range v {
		switch k {
		case "status", "link_type", "target_id", "recipient", "tag", "order_by", "order", "size", "last":
		default:
			e := apperr.New(apperr.Invalid, "unknown_parameter", "unknown query parameter %q", k)
			e.Field = k
			return link.Query{}, e
		}
	}
	q := link.Query{
		Status: v.Get("status"), LinkType: v.Get("link_type"), TargetID: v.Get("target_id"), Tag: v.Get("tag"),
		OrderBy: v.Get("order_by"), Size: 20, Desc: true,
	}
	if err := textParams(v); err != nil {
		return q, err
	}
	switch q.Status {
	case "", link.StatusActive, link.StatusExpired, link.StatusExhausted, link.StatusRevoked:
	default:
		return q, apperr.Field("status", "invalid_status", "status must be active, expired, exhausted or revoked")
	}
	switch q.LinkType {
	case "", "view", "download", "upload", "editor":
	default:
		return q, apperr.Field("link_type", "invalid_link_type", "link_type must be view, download, upload or editor")
	}
	switch q.OrderBy {
	case "":
		q.OrderBy = "created_at"
	case "created_at", "expires_at":
	default:
		return q, apperr.Field("order_by", "invalid_order_by", "order_by must be created_at or expires_at")
	}
	switch v.Get("order") {
	case "", "desc":
	case "asc":
		q.Desc = false
	default:
		return q, apperr.Field("order", "invalid_order", "order must be asc or desc")
	}
	if sz := v.Get("size"); sz != "" {
		n, err := strconv.Atoi(sz)
		if err != nil || n < 1 || n > 100 {
			return q, apperr.Field("size", "invalid_size", "size must be 1 to 100")
		}
		q.Size = n
	}
	if rcpt := strings.TrimSpace(v.Get("recipient")); rcpt != "" {
		if strings.HasPrefix(rcpt, "+") {
			p, err := link.NormalizePhone(rcpt, "")
			if err != nil {
				return q, apperr.Field("recipient", "invalid_recipient", "%s", err.Error())
			}
			q.Recipient = p
		} else {
			e, err := link.NormalizeEmail(rcpt)
			if err != nil {
				return q, apperr.Field("recipient", "invalid_recipient", "%s", err.Error())
			}
			q.Recipient = e
		}
	}
	if last := v.Get("last"); last != "" {
		var c link.Cursor
		raw, err := base64.RawURLEncoding.DecodeString(last)
		if err != nil || json.Unmarshal(raw, &c) != nil || !isUUID(c.ID) {
			return q, apperr.Field("last", "invalid_cursor", "last must be the value of a previous response's last")
		}
		if c.OrderBy != q.OrderBy || c.Desc != q.Desc {
			return q, apperr.Field("last", "invalid_cursor", "the cursor belongs to another ordering; keep order_by and order the same while paging")
		}
		q.After = &c
	}
	return q, nil
}

func (s *Server) deleteLink(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	id := r.PathValue("id")
	_, notFound, err := s.svc.Revoke(r.Context(), o, []string{id})
	if err != nil {
		return err
	}
	if len(notFound) > 0 {
		return apperr.New(apperr.NotFound, "link_not_found", "link not found")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// getPolicy answers what applies to the owner's new links: the service's
// settings narrowed by what the operator set for this owner. Times are in
// seconds; a null default expiry means expires_at is required, a null
// access limit that links may be unlimited.
func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	p := s.svc.Policy(o)
	orNil := func(n int64) *int64 {
		if n == 0 {
			return nil
		}
		return &n
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"max_expiry":        int64(p.MaxExpiry / time.Second),
		"default_expiry":    orNil(int64(p.DefaultExpiry / time.Second)),
		"max_access_count":  orNil(int64(p.MaxAccessCount)),
		"forbid_open_links": p.ForbidOpenLinks,
		"otp_policy":        p.OTP,
	})
	return nil
}

func (s *Server) restoreLink(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	v, err := s.svc.Restore(r.Context(), o, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toLinkJSON(v))
	return nil
}

// checkLinkIDs: an id that is no link id at all is the caller's mistake,
// and said so (ids that are well formed but not the caller's are answered
// per id).
func checkLinkIDs(ids []string) error {
	for i, id := range ids {
		if !isUUID(id) {
			return apperr.Field(fmt.Sprintf("ids[%d]", i), "invalid_id", "ids[%d] must be a link id", i)
		}
	}
	return nil
}

// restoreLinks undoes revokes of up to 100 links in one transaction and
// lists each id back as restored or not, with why.
func (s *Server) restoreLinks(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	var body struct {
		IDs []string `json:"ids"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	if err := checkLinkIDs(body.IDs); err != nil {
		return err
	}
	views, refused, err := s.svc.RestoreMany(r.Context(), o, body.IDs)
	if err != nil {
		return err
	}
	type refusal struct {
		ID      string `json:"id"`
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	out := struct {
		Restored    []linkJSON `json:"restored"`
		NotRestored []refusal  `json:"not_restored"`
	}{Restored: toLinksJSON(views), NotRestored: []refusal{}}
	for _, id := range body.IDs {
		if err, ok := refused[id]; ok {
			e, ok := apperr.As(err)
			if !ok {
				return err
			}
			out.NotRestored = append(out.NotRestored, refusal{ID: id, Code: e.Reason, Message: e.Message})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeLinks(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	var body struct {
		IDs       []string `json:"ids"`
		TargetID  *string  `json:"target_id"`
		Tag       *string  `json:"tag"`
		Recipient *string  `json:"recipient"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	given := 0
	for _, set := range []bool{body.IDs != nil, body.TargetID != nil, body.Tag != nil, body.Recipient != nil} {
		if set {
			given++
		}
	}
	if given != 1 {
		return apperr.New(apperr.Invalid, "invalid_revoke", "send one of ids, target_id, tag or recipient")
	}
	if body.IDs == nil {
		var revoked []string
		var err error
		switch {
		case body.TargetID != nil:
			revoked, err = s.svc.RevokeTarget(r.Context(), o, *body.TargetID)
		case body.Tag != nil:
			revoked, err = s.svc.RevokeTag(r.Context(), o, *body.Tag)
		default:
			revoked, err = s.svc.RevokeRecipient(r.Context(), o, *body.Recipient)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"revoked": revoked, "not_found": []string{}})
		return nil
	}
	// The answer lists each id back as revoked or not found.
	if err := checkLinkIDs(body.IDs); err != nil {
		return err
	}
	revoked, notFound, err := s.svc.Revoke(r.Context(), o, body.IDs)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": revoked, "not_found": notFound})
	return nil
}

type notificationJSON struct {
	ID         string     `json:"id"`
	LinkID     string     `json:"link_id"`
	Channel    string     `json:"channel"`
	Recipient  string     `json:"recipient"`
	Status     string     `json:"status"`
	Kind       string     `json:"kind"`
	RemindAt   *time.Time `json:"remind_at"`
	Attempts   int        `json:"attempts"`
	LastError  *string    `json:"last_error"`
	ProviderID *string    `json:"provider_id"`
	SentAt     *time.Time `json:"sent_at"`
	CreatedAt  time.Time  `json:"created_at"`
	UpdatedAt  time.Time  `json:"updated_at"`
}

func maskAddress(channel, recipient string) string {
	if channel == "sms" {
		return link.MaskPhone(recipient)
	}
	return link.MaskEmail(recipient)
}

func toNotificationJSON(n link.Notification) notificationJSON {
	return notificationJSON{
		ID: n.ID, LinkID: n.LinkID, Channel: n.Channel, Recipient: maskAddress(n.Channel, n.Recipient),
		Status: n.Status, Kind: n.Kind, RemindAt: n.RemindAt, Attempts: n.Attempts, LastError: n.LastError, ProviderID: n.ProviderID,
		SentAt: n.SentAt, CreatedAt: n.CreatedAt.UTC(), UpdatedAt: n.UpdatedAt.UTC(),
	}
}

func (s *Server) sendLinks(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	var body struct {
		LinkIDs    []string `json:"link_ids"`
		Recipients []string `json:"recipients"`
		Message    string   `json:"message"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	notes, replayed, err := s.svc.Send(r.Context(), o, body.LinkIDs, body.Recipients, body.Message, r.Header.Get(idempotencyKeyHeader))
	if err != nil {
		return err
	}
	s.markReplayed(w, link.OpSendLinks, replayed)
	type queued struct {
		ID        string `json:"id"`
		LinkID    string `json:"link_id"`
		Recipient string `json:"recipient"`
		Status    string `json:"status"`
	}
	out := make([]queued, len(notes))
	for i, n := range notes {
		out[i] = queued{ID: n.ID, LinkID: n.LinkID, Recipient: maskAddress(n.Channel, n.Recipient), Status: n.Status}
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"notifications": out})
	return nil
}

func (s *Server) getNotification(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	n, err := s.svc.Notification(r.Context(), o, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toNotificationJSON(n))
	return nil
}

func (s *Server) linkNotifications(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	notes, err := s.svc.LinkNotifications(r.Context(), o, r.PathValue("id"))
	if err != nil {
		return err
	}
	out := make([]notificationJSON, len(notes))
	for i, n := range notes {
		out[i] = toNotificationJSON(n)
	}
	writeJSON(w, http.StatusOK, map[string]any{"notifications": out})
	return nil
}
