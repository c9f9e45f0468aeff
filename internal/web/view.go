package web

import (
	"fmt"
	"strings"
	"time"

	"github.com/sharelinks/sharelinks/internal/compose"
	"github.com/sharelinks/sharelinks/internal/link"
)

// view is what every template sees; each page fills the fields it shows.
type view struct {
	Brand  brandView
	Assets map[string]string

	DocTitle   string // <title>, before the brand name
	Heading    string
	Paragraphs []string // message pages
	Reference  string   // request id on the failure page

	Base string // "/s/{token}": every form and link of the link's pages
	CSRF string

	// What the link shares.
	MessageLines []string
	Contents     string // "2 files and 1 folder"
	Access       string // "View only"
	ExpiresIn    string // "3 days"
	ExpiresAt    time.Time

	Step        string // landing: password | otp | open | verified
	Destination string // masked email or phone of an OTP link
	ByText      bool   // the code goes by SMS
	Single      *item  // verified landing with one file: open it directly

	Error      string // the form's problem, shown next to the field
	Notice     string // good news, e.g. "we sent a code"
	CodeLife   string // how long a code works, in words
	CodeLength int    // digits in a code
	CodeWait   int    // seconds before another code may be asked for
	WaitWords  string // the same, in words

	Items   []item
	Opening *item  // the item being opened on the auto-open page
	Refresh string // URL the auto-open page navigates to
}

// item is one shared target on the files page.
type item struct {
	Name   string
	Kind   string // File | Folder
	Folder bool
	Href   string // empty: no web address to open
}

// heading is the title of the link, or a description of what it shares.
func heading(l link.Link) string {
	if t := strings.Join(strings.Fields(l.Title), " "); t != "" {
		return t
	}
	files, folders := counts(l.Targets)
	switch {
	case files == 1 && folders == 0:
		return "A file was shared with you"
	case files == 0 && folders == 1:
		return "A folder was shared with you"
	}
	return "Files were shared with you"
}

func counts(ts []link.Target) (files, folders int) {
	for _, t := range ts {
		if t.Type == "folder" {
			folders++
		} else {
			files++
		}
	}
	return files, folders
}

// contents says what is shared without naming it: "2 files and 1 folder".
func contents(ts []link.Target) string {
	files, folders := counts(ts)
	var parts []string
	if files > 0 {
		parts = append(parts, plural(files, "file"))
	}
	if folders > 0 {
		parts = append(parts, plural(folders, "folder"))
	}
	return strings.Join(parts, " and ")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// access names what the link lets a recipient do.
func access(linkType string) string {
	switch linkType {
	case "view":
		return "View only"
	case "download":
		return "View and download"
	case "upload":
		return "Upload files"
	case "editor":
		return "View and edit"
	}
	return "Open"
}

// messageLines splits the owner's message into lines for the page; the
// template escapes each.
func messageLines(msg string) []string {
	msg = strings.TrimSpace(strings.ReplaceAll(msg, "\r\n", "\n"))
	if msg == "" {
		return nil
	}
	return strings.Split(msg, "\n")
}

// waitWords says a wait for people: seconds below a minute, then minutes,
// hours or days (compose.Humanize, shared with the emails).
func waitWords(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	if s < 60 {
		return plural(max(s, 1), "second")
	}
	if s < 90 {
		return "1 minute"
	}
	return compose.Humanize(d)
}

// fill sets what every page of a live link shows about it.
func (v *view) fill(l link.Link, now time.Time) {
	v.Heading = heading(l)
	v.DocTitle = v.Heading
	v.MessageLines = messageLines(l.Message)
	v.Contents = contents(l.Targets)
	v.Access = access(l.LinkType)
	v.ExpiresAt = l.ExpiresAt.UTC()
	v.ExpiresIn = compose.Humanize(l.ExpiresAt.Sub(now))
}

// ACode names the code with its article: "a 6-digit code", "an 8-digit code"
// (eight is the one length in 6–10 said with a vowel).
func (v *view) ACode() string {
	if v.CodeLength == 8 {
		return "an 8-digit code"
	}
	return fmt.Sprintf("a %d-digit code", v.CodeLength)
}
