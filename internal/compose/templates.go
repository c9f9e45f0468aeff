package compose

import (
	htmltemplate "html/template"
	texttemplate "text/template"
)

// The HTML follows what renders well across mail clients: table layout with
// role="presentation" (screen readers skip layout tables), inline CSS only, a
// 560px column that shrinks on phones, a system font stack, body text at 16px,
// a hidden preheader for the inbox preview and a "bulletproof" button (a
// padded link inside a coloured cell) that works without images or CSS
// support. Colours keep WCAG AA contrast on the white card.

// fontStack is repeated in each styled cell because many clients drop
// inherited styles.
const fontStack = `-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif`

const htmlLayout = `{{define "layout"}}<!DOCTYPE html>
<html lang="en" dir="ltr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="x-apple-disable-message-reformatting">
<meta name="color-scheme" content="light">
<meta name="supported-color-schemes" content="light">
<title>{{.Subject}}</title>
</head>
<body style="margin:0;padding:0;background-color:#f4f4f5;-webkit-text-size-adjust:100%;">
<div style="display:none;max-height:0;overflow:hidden;opacity:0;mso-hide:all;" aria-hidden="true">{{.Preheader}}</div>
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="background-color:#f4f4f5;">
<tr><td align="center" style="padding:24px 12px;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" style="max-width:560px;background-color:#ffffff;border-radius:8px;border:1px solid #e4e4e7;">
<tr><td style="padding:24px 28px 0 28px;font-family:` + fontStack + `;">
{{- if .Brand.LogoURL}}<img src="{{.Brand.LogoURL}}" alt="{{.Brand.Name}}" height="32" style="display:block;height:32px;width:auto;max-width:200px;border:0;">
{{- else}}<span style="font-size:16px;font-weight:700;color:#18181b;">{{.Brand.Name}}</span>{{end -}}
</td></tr>
<tr><td style="padding:20px 28px 28px 28px;font-family:` + fontStack + `;font-size:16px;line-height:1.5;color:#18181b;">
{{template "content" .}}
</td></tr>
</table>
<p style="margin:16px 0 0 0;max-width:560px;font-family:` + fontStack + `;font-size:12px;line-height:1.5;color:#52525b;text-align:center;">Sent by {{.Brand.Name}}. This is an automated message; replies are not read.</p>
</td></tr>
</table>
</body>
</html>
{{end}}`

const notificationContent = `{{define "content" -}}
<h1 style="margin:0 0 16px 0;font-size:22px;line-height:1.3;font-weight:700;color:#18181b;">{{.Heading}}</h1>
{{- if .Reminder}}
<p style="margin:0 0 16px 0;font-weight:700;">A reminder: you have not opened this yet, and it {{if .Expiry}}{{.Expiry}}{{else}}will expire soon{{end}}.</p>
{{- end}}
{{- if .Title}}
<p style="margin:0 0 16px 0;">{{.Sender}} shared this with you.</p>
{{- end}}
{{- if .MessageLines}}
<p style="margin:0 0 4px 0;font-size:14px;color:#52525b;">Message from {{.Sender}}:</p>
<div style="margin:0 0 16px 0;padding:12px 16px;background-color:#f4f4f5;border-left:4px solid {{.Brand.AccentColor}};border-radius:4px;">
{{- range $i, $line := .MessageLines}}{{if $i}}<br>{{end}}{{$line}}{{end -}}
</div>
{{- end}}
<table role="presentation" cellpadding="0" cellspacing="0" border="0" style="margin:24px 0;">
<tr><td align="center" bgcolor="{{.Brand.AccentColor}}" style="border-radius:6px;background-color:{{.Brand.AccentColor}};">
<a href="{{.URL}}" target="_blank" rel="noopener noreferrer" style="display:inline-block;padding:14px 36px;font-family:` + fontStack + `;font-size:18px;font-weight:700;line-height:1.2;color:#ffffff;text-decoration:none;border-radius:6px;">Open</a>
</td></tr>
</table>
<p style="margin:0 0 16px 0;font-size:14px;color:#52525b;">Or copy this link into your browser:<br>
<a href="{{.URL}}" target="_blank" rel="noopener noreferrer" style="color:{{.Brand.AccentColor}};word-break:break-all;">{{.URL}}</a></p>
{{- if .Opens}}
<p style="margin:0 0 16px 0;font-weight:700;">It opens {{.Opens}}; until then the link shows when.</p>
{{- end}}
{{- if .Expiry}}
<p style="margin:0 0 16px 0;">This link {{.Expiry}}.</p>
{{- end}}
{{- if .Need}}
<p style="margin:0 0 16px 0;">To open it you will need {{.Need}}.</p>
{{- end}}
<p style="margin:24px 0 0 0;font-size:14px;color:#52525b;">If you were not expecting this, you can ignore this email.</p>
{{- end}}`

const otpContent = `{{define "content" -}}
<h1 style="margin:0 0 16px 0;font-size:22px;line-height:1.3;font-weight:700;color:#18181b;">Your verification code</h1>
<p style="margin:0 0 16px 0;">Enter this code to open the shared link{{if .Host}} on {{.Host}}{{end}}:</p>
<p style="margin:0 0 16px 0;padding:16px;background-color:#f4f4f5;border-radius:6px;text-align:center;font-family:'SFMono-Regular',Menlo,Consolas,'Courier New',monospace;font-size:36px;font-weight:700;letter-spacing:8px;color:#18181b;">{{.Code}}</p>
<p style="margin:0 0 16px 0;">The code is valid for {{.Validity}} and works only once.</p>
<p style="margin:24px 0 0 0;font-size:14px;color:#52525b;">If you did not ask for this, ignore this email. Nobody can open the link without the code, and we will never ask you to share it.</p>
{{- end}}`

const notificationTextTmpl = `{{.Heading}}
{{if .Reminder}}
A reminder: you have not opened this yet, and it {{if .Expiry}}{{.Expiry}}{{else}}will expire soon{{end}}.
{{end}}{{if .Title}}
{{.Sender}} shared this with you.
{{end}}{{if .MessageLines}}
Message from {{.Sender}}:
{{range .MessageLines}}> {{.}}
{{end}}{{end}}
Open: {{.URL}}
{{if .Opens}}
It opens {{.Opens}}; until then the link shows when.
{{end}}{{if .Expiry}}
This link {{.Expiry}}.
{{end}}{{if .Need}}
To open it you will need {{.Need}}.
{{end}}
If you were not expecting this, you can ignore this email.

-- 
Sent by {{.Brand.Name}}. This is an automated message; replies are not read.
`

const otpTextTmpl = `Your verification code

Enter this code to open the shared link{{if .Host}} on {{.Host}}{{end}}:

    {{.Code}}

The code is valid for {{.Validity}} and works only once.

If you did not ask for this, ignore this email. Nobody can open the link
without the code, and we will never ask you to share it.

-- 
Sent by {{.Brand.Name}}. This is an automated message; replies are not read.
`

// Parsed once at package load: the templates are constants, so a parse error
// is a programming error caught by any test.
var (
	notificationHTML = mustHTML("notification", notificationContent)
	otpHTML          = mustHTML("otp", otpContent)
	notificationText = texttemplate.Must(texttemplate.New("notification").Parse(notificationTextTmpl))
	otpText          = texttemplate.Must(texttemplate.New("otp").Parse(otpTextTmpl))
)

// mustHTML combines the shared layout with one content block and returns a
// template whose execution renders the layout.
func mustHTML(name, content string) *htmltemplate.Template {
	t := htmltemplate.Must(htmltemplate.New(name).Parse(htmlLayout))
	t = htmltemplate.Must(t.Parse(content))
	return htmltemplate.Must(t.Lookup("layout"), nil)
}
