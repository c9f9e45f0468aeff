package delivery

import (
	"encoding/json"
	"fmt"

	"github.com/sharelinks/sharelinks/internal/events"
)

func unmarshal(e events.Event, v any) error {
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("decode %s data: %w", e.Type, err)
	}
	return nil
}
