package link

import (
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/sharelinks/sharelinks/internal/apperr"
)

// Bounds of a link's tags.
const (
	MaxTags   = 20
	MaxTagLen = 64
)

// checkTag accepts 1 to MaxTagLen characters of text without leading or
// trailing space: tags are matched exactly, so " legal" and "legal" must
// not both exist by accident.
func checkTag(field, t string) error {
	n := utf8.RuneCountInString(t)
	if n == 0 || n > MaxTagLen || !IsText(t) || t[0] == ' ' || t[len(t)-1] == ' ' {
		return apperr.Field(field, "invalid_tag", "a tag is 1 to %d characters of text, without spaces at either end", MaxTagLen)
	}
	return nil
}

// parseTags checks a link's tags and drops repeats, keeping their order;
// none is nil.
func parseTags(field string, in []string) ([]string, error) {
	if len(in) > MaxTags {
		return nil, apperr.Field(field, "invalid_tags", "at most %d tags per link", MaxTags)
	}
	var out []string
	for i, t := range in {
		if err := checkTag(fmt.Sprintf("%s[%d]", field, i), t); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}
