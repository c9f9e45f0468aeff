// Package schemas holds the contracts other parts of sharelinks are checked
// against: one JSON Schema (draft 2020-12) per event type under events/v1/,
// and the HTTP API in openapi.yaml (OpenAPI 3.1). The files are embedded, so
// producers, consumers and tests all validate against the same bytes that
// ship in the repository.
//
// Validators are compiled on first use and cached; every exported function is
// safe for concurrent use.
package schemas

import (
	"bytes"
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// files is read-only; the validators below are derived from it once.
//
//go:embed openapi.yaml events/v1/*.json
var files embed.FS

const (
	openAPIFile = "openapi.yaml"
	eventsDir   = "events/v1"
	// envelopeFile holds the parts shared by every event type; it is a
	// building block, not an event type of its own.
	envelopeFile = "envelope.json"
)

// ErrUnknownEventType is returned (wrapped) by ValidateEvent when the event's
// "type" has no schema.
var ErrUnknownEventType = errors.New("unknown event type")

// The package-level API (ValidateEvent, ValidateResponse) is the contract the
// rest of the tree codes against, so the compiled validators live behind
// sync.OnceValues: built once on first use, immutable afterwards, and a
// build error (a defect in the embedded files) is reported on every call
// instead of panicking.
var (
	loadEvents = sync.OnceValues(compileEvents)
	loadAPI    = sync.OnceValues(newAPIValidator)
)

// OpenAPI returns a copy of the embedded openapi.yaml.
func OpenAPI() []byte {
	b, err := files.ReadFile(openAPIFile)
	if err != nil {
		// Unreachable: the go:embed directive fails the build when the file is missing.
		panic(fmt.Sprintf("schemas: read embedded %s: %v", openAPIFile, err))
	}
	return b
}

// EventTypes returns every event type that has a schema, sorted, e.g.
// "link.created". Each maps to the NATS subject "sharelinks.events." + type.
func EventTypes() []string {
	entries, err := fs.ReadDir(files, eventsDir)
	if err != nil {
		// Unreachable: the go:embed directive fails the build when the directory is missing.
		panic(fmt.Sprintf("schemas: read embedded %s: %v", eventsDir, err))
	}
	var types []string
	for _, e := range entries {
		name := e.Name()
		if name == envelopeFile || !strings.HasSuffix(name, ".json") {
			continue
		}
		types = append(types, strings.TrimSuffix(name, ".json"))
	}
	slices.Sort(types)
	return types
}

// ValidateEvent validates a whole event envelope (JSON) against the schema of
// its "type" field. It returns an error wrapping ErrUnknownEventType when no
// schema exists for that type, and a *jsonschema.ValidationError (wrapped)
// when the event does not conform. Formats (uuid, date-time, ...) are asserted.
func ValidateEvent(raw []byte) error {
	evs, err := loadEvents()
	if err != nil {
		return err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("decode event: %w", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return errors.New("decode event: not a JSON object")
	}
	typ, ok := obj["type"].(string)
	if !ok {
		return fmt.Errorf("event %q field: %w", "type", ErrUnknownEventType)
	}
	sch, ok := evs[typ]
	if !ok {
		return fmt.Errorf("event type %q: %w", typ, ErrUnknownEventType)
	}
	if err := sch.Validate(doc); err != nil {
		return fmt.Errorf("event %s: %w", typ, err)
	}
	return nil
}

// compileEvents compiles one schema per event type. Every embedded file is
// registered under its own $id so that relative references
// ("envelope.json#/$defs/uuid") resolve without any file or network access.
func compileEvents() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// No loaders: a reference to anything but the embedded files is a defect,
	// and must fail here rather than reach out to the network.
	c.UseLoader(jsonschema.SchemeURLLoader{})

	entries, err := fs.ReadDir(files, eventsDir)
	if err != nil {
		return nil, fmt.Errorf("read embedded %s: %w", eventsDir, err)
	}
	ids := make(map[string]string, len(entries)) // event type -> $id
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		b, err := files.ReadFile(path.Join(eventsDir, name))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", name, err)
		}
		obj, _ := doc.(map[string]any)
		id, _ := obj["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("%s: missing $id", name)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("add %s: %w", name, err)
		}
		if name != envelopeFile {
			ids[strings.TrimSuffix(name, ".json")] = id
		}
	}

	out := make(map[string]*jsonschema.Schema, len(ids))
	for typ, id := range ids {
		sch, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %w", typ, err)
		}
		out[typ] = sch
	}
	return out, nil
}

// apiValidator is the loaded OpenAPI document and a router over its paths.
type apiValidator struct {
	router  routers.Router
	options *openapi3filter.Options
}

// uuidPattern is the shape JSON Schema's "uuid" format accepts (RFC 9562
// text form, any version), so both validators agree on what a uuid is.
const uuidPattern = `^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`

func newAPIValidator() (*apiValidator, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromData(OpenAPI())
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", openAPIFile, err)
	}
	ctx := context.Background()
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("validate %s: %w", openAPIFile, err)
	}
	// Responses are matched on the path alone: the documented server is an
	// example, while tests hit 127.0.0.1 on a random port and production sits
	// behind PUBLIC_BASE_URL. Without servers the router matches any host.
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("build router: %w", err)
	}
	opts := &openapi3filter.Options{
		// A status the document does not list is a contract break too.
		IncludeResponseStatus: true,
		// kin-openapi checks only the formats it is told about; these are
		// the ones openapi.yaml uses beyond its built-in date-time.
		SchemaValidationOptions: []openapi3.SchemaValidationOption{
			openapi3.WithStringFormatValidators(map[string]openapi3.StringFormatValidator{
				"uuid": openapi3.NewRegexpFormatValidator(uuidPattern),
				"uri":  openapi3.NewCallbackValidator(validateURI),
			}),
		},
	}
	opts.WithCustomSchemaErrorFunc(schemaErrorMessage)
	return &apiValidator{router: router, options: opts}, nil
}

// schemaErrorMessage says where and why a value failed, one line per
// failure, without the value itself: kin-openapi's default message dumps the
// schema and the value, and the JSON Schema 2020-12 validator's quotes values
// that failed a format or pattern, while a response value can be an access
// token or a grant that must not reach test logs.
func schemaErrorMessage(err *openapi3.SchemaError) string {
	var lines []string
	collectSchemaErrors(err, &lines)
	return strings.Join(lines, "; ")
}

// collectSchemaErrors appends a line per leaf of err's tree of causes.
func collectSchemaErrors(err *openapi3.SchemaError, lines *[]string) {
	var multi openapi3.MultiError
	if err.Origin != nil && errors.As(err.Origin, &multi) {
		for _, e := range multi {
			if se, ok := e.(*openapi3.SchemaError); ok {
				collectSchemaErrors(se, lines)
			}
		}
		return
	}
	// A leaf converted from the 2020-12 validator wraps that validator's error
	// (when Origin is nil); its kind says what failed.
	var verr *jsonschema.ValidationError
	if err.Origin == nil && errors.As(err, &verr) && len(verr.Causes) == 0 {
		at := "/" + strings.Join(verr.InstanceLocation, "/")
		*lines = append(*lines, fmt.Sprintf("at %q: %s", at, describeKind(verr.ErrorKind)))
		return
	}
	// kin-openapi's own validator keeps values out of Reason by contract.
	at := "/" + strings.Join(err.JSONPointer(), "/")
	reason := cmp.Or(err.Reason, "fails "+strconv.Quote(err.SchemaField))
	*lines = append(*lines, fmt.Sprintf("at %q: %s", at, reason))
}

// describeKind renders a validation failure; formats and patterns are the
// kinds whose stock message quotes the offending value.
func describeKind(k jsonschema.ErrorKind) string {
	switch k := k.(type) {
	case *kind.Format:
		return "not a valid " + k.Want
	case *kind.Pattern:
		return "does not match pattern " + strconv.Quote(k.Want)
	default:
		return k.LocalizedString(message.NewPrinter(language.English))
	}
}

// validateURI accepts absolute URIs only, as JSON Schema's "uri" format does.
func validateURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse's error quotes the input, and a Location may carry a grant.
		return errors.New("not a URI")
	}
	if !u.IsAbs() {
		return errors.New("not an absolute URI")
	}
	return nil
}

// ValidateResponse checks a real HTTP response against openapi.yaml: the
// operation is found from req's method and path (the host is ignored), then
// the status must be one the operation documents, and the headers and body
// must match it. A 2xx status without documented content (204) must come
// with an empty body. req is the request that produced the response; its
// body is not read.
func ValidateResponse(req *http.Request, status int, header http.Header, body []byte) error {
	v, err := loadAPI()
	if err != nil {
		return err
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("find operation for %s %s: %w", req.Method, redactPath(req.URL.Path), err)
	}
	if header == nil {
		header = http.Header{}
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: params,
			Route:      route,
			Options:    v.options,
		},
		Status:  status,
		Header:  header,
		Options: v.options,
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		return fmt.Errorf("%s %s -> %d: %w", req.Method, route.Path, status, err)
	}
	// kin-openapi skips bodies where the document describes none; on a 2xx
	// (204) a body is still a contract break. Redirects are left alone:
	// net/http's Redirect adds a short HTML body clients never read.
	if resp := route.Operation.Responses.Status(status); status/100 == 2 && resp != nil && resp.Value != nil &&
		len(resp.Value.Content) == 0 && len(bytes.TrimSpace(body)) > 0 {
		return fmt.Errorf("%s %s -> %d: response has a body but none is documented", req.Method, route.Path, status)
	}
	return nil
}

// redactPath hides a share token (/s/{token}/...) in a path that matched no
// operation, so that the error can be logged.
func redactPath(p string) string {
	segs := strings.Split(p, "/")
	if len(segs) > 2 && segs[0] == "" && segs[1] == "s" {
		segs[2] = "{token}"
	}
	return strings.Join(segs, "/")
}
