package web

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// asset is one static file, served from memory.
type asset struct {
	body    []byte
	ctype   string
	version string // content hash: the ?v= of its URL
}

// loadAssets reads the embedded static files plus the generated theme and
// returns them with their versioned URLs. Pages link the versioned URL, so
// an asset can be cached for a year and a new build is fetched at once.
func loadAssets(theme []byte) (map[string]asset, map[string]string) {
	files := map[string][]byte{"theme.css": theme}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		files[path.Base(p)] = b
		return err
	})
	if err != nil {
		panic(fmt.Sprintf("web: read embedded assets: %v", err))
	}
	assets := make(map[string]asset, len(files))
	urls := make(map[string]string, len(files))
	for name, b := range files {
		sum := sha256.Sum256(b)
		a := asset{body: b, ctype: mime.TypeByExtension(path.Ext(name)), version: hex.EncodeToString(sum[:6])}
		if a.ctype == "" {
			a.ctype = "application/octet-stream"
		}
		assets[name] = a
		// Template keys cannot contain dots: "app.css" is .Assets.app_css.
		urls[strings.ReplaceAll(name, ".", "_")] = "/assets/" + name + "?v=" + a.version
	}
	return assets, urls
}

func (p *Pages) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := p.assets[r.PathValue("file")]
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if !ok {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("not found\n"))
		return
	}
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", `"`+a.version+`"`)
	if r.URL.Query().Get("v") == a.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if match := r.Header.Get("If-None-Match"); match == `"`+a.version+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body)
	}
}

// rgb is a colour with channels in 0..1.
type rgb struct{ r, g, b float64 }

// parseHex reads #rgb, #rgba, #rrggbb or #rrggbbaa (alpha is ignored: the
// theme needs an opaque colour to guarantee contrast).
func parseHex(s string) (rgb, bool) {
	s = strings.TrimPrefix(s, "#")
	switch len(s) {
	case 3, 4:
		s = string([]byte{s[0], s[0], s[1], s[1], s[2], s[2]})
	case 6, 8:
		s = s[:6]
	default:
		return rgb{}, false
	}
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil {
		return rgb{}, false
	}
	return rgb{float64(v>>16&0xff) / 255, float64(v>>8&0xff) / 255, float64(v&0xff) / 255}, true
}

func (c rgb) hex() string {
	ch := func(x float64) int { return int(math.Round(math.Max(0, math.Min(1, x)) * 255)) }
	return fmt.Sprintf("#%02x%02x%02x", ch(c.r), ch(c.g), ch(c.b))
}

// luminance is the WCAG 2 relative luminance.
func (c rgb) luminance() float64 {
	lin := func(x float64) float64 {
		if x <= 0.04045 {
			return x / 12.92
		}
		return math.Pow((x+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(c.r) + 0.7152*lin(c.g) + 0.0722*lin(c.b)
}

// contrast is the WCAG 2 contrast ratio of two colours (1 to 21).
func contrast(a, b rgb) float64 {
	la, lb := a.luminance(), b.luminance()
	if la < lb {
		la, lb = lb, la
	}
	return (la + 0.05) / (lb + 0.05)
}

func (c rgb) darker(f float64) rgb { return rgb{c.r * (1 - f), c.g * (1 - f), c.b * (1 - f)} }

// darkenUntil darkens c in small steps until it reaches ratio against bg.
func darkenUntil(c, bg rgb, ratio float64) rgb {
	for i := 0; i < 40 && contrast(c, bg) < ratio; i++ {
		c = c.darker(0.05)
	}
	return c
}

var (
	white   = rgb{1, 1, 1}
	ink     = rgb{0x18 / 255.0, 0x18 / 255.0, 0x1b / 255.0} // #18181b, the text colour
	paleBox = rgb{0xf4 / 255.0, 0xf4 / 255.0, 0xf5 / 255.0} // #f4f4f5, page and message background
)

// themeCSS turns the owner's accent into CSS custom properties that keep
// WCAG AA contrast whatever colour was chosen: button text is white or ink,
// whichever reads better (the button darkens if neither reaches 4.5:1), and
// links use the accent darkened until it reads on the pale background.
func themeCSS(accent string) []byte {
	c, ok := parseHex(accent)
	if !ok {
		c, _ = parseHex("#2563eb")
	}
	button, text := c, white
	if contrast(c, ink) > contrast(c, white) {
		text = ink
	}
	if contrast(button, text) < 4.5 {
		text = white
		button = darkenUntil(button, white, 4.5)
	}
	linkColour := darkenUntil(c, paleBox, 4.5)
	return fmt.Appendf(nil, ":root{--accent:%s;--accent-ink:%s;--accent-text:%s}\n", button.hex(), text.hex(), linkColour.hex())
}
