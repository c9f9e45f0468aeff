package httpapi

import (
	"net/http"
	"time"

	"github.com/sharelinks/sharelinks/internal/link"
	"github.com/sharelinks/sharelinks/internal/postgres"
)

type webhookJSON struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	Secret    string    `json:"secret,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

func toWebhookJSON(w postgres.Webhook) webhookJSON {
	return webhookJSON{ID: w.ID, URL: w.URL, Events: w.Events, CreatedAt: w.CreatedAt.UTC()}
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	var body struct {
		URL    string   `json:"url"`
		Events []string `json:"events"`
		Secret string   `json:"secret"`
	}
	if err := decode(w, r, &body); err != nil {
		return err
	}
	c, err := s.hooks.Create(r.Context(), o.ID, body.URL, body.Events, body.Secret)
	if err != nil {
		return err
	}
	out := toWebhookJSON(c.Webhook)
	out.Secret = c.Secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	hooks, err := s.hooks.List(r.Context(), o.ID)
	if err != nil {
		return err
	}
	out := make([]webhookJSON, len(hooks))
	for i, h := range hooks {
		out[i] = toWebhookJSON(h)
	}
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": out})
	return nil
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	if err := s.hooks.Delete(r.Context(), o.ID, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

type deliveryJSON struct {
	ID             string     `json:"id"`
	EventID        string     `json:"event_id"`
	EventType      string     `json:"event_type"`
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      *string    `json:"last_error"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	DeliveredAt    *time.Time `json:"delivered_at"`
	CreatedAt      time.Time  `json:"created_at"`
}

func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request, o link.Owner) error {
	ds, err := s.hooks.Deliveries(r.Context(), o.ID, r.PathValue("id"))
	if err != nil {
		return err
	}
	out := make([]deliveryJSON, len(ds))
	for i, d := range ds {
		out[i] = deliveryJSON{ID: d.ID, EventID: d.EventID, EventType: d.EventType, Status: d.Status, Attempts: d.Attempts,
			LastStatusCode: d.LastStatusCode, LastError: d.LastError, NextAttemptAt: d.NextAttemptAt,
			DeliveredAt: d.DeliveredAt, CreatedAt: d.CreatedAt.UTC()}
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": out})
	return nil
}
