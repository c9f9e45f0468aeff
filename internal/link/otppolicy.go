package link

import (
	"fmt"
	"time"

	"github.com/sharelinks/sharelinks/internal/apperr"
)

// OTPPolicy is how the one-time codes of a link work. On a Link it holds
// only what the owner set (a zero field takes the operator's default, so
// a default changed later reaches links that did not choose); in a View
// and to recipients, what applies, every field set (Service.OTPPolicy).
type OTPPolicy struct {
	CodeLength  int `json:"code_length,omitempty"`  // digits
	CodeTTL     int `json:"code_ttl,omitempty"`     // seconds a code works after it is requested
	MaxAttempts int `json:"max_attempts,omitempty"` // wrong codes before a code locks
	ResendAfter int `json:"resend_after,omitempty"` // seconds before another code may be sent
}

// Bounds of an OTP policy, from the guidance README's security model cites:
// NIST 800-63B §5.1.3.2 (a code lives at most 10 minutes; at least 20 bits,
// which 6 digits are) and §5.2.2 (rate limiting), OWASP ASVS 6.5.5 and the
// MFA cheat sheet ("consider 8-digit or longer codes"). At the loosest
// bounds, one code falls to a guess with odds of 10 in 10^6; the hourly
// caps on codes per link and per destination bound the guesses an hour.
const (
	MinCodeLength  = 6
	MaxCodeLength  = 10
	MinCodeTTL     = time.Minute
	MaxCodeTTL     = 10 * time.Minute
	MinMaxAttempts = 1
	MaxMaxAttempts = 10
	MinResendAfter = 10 * time.Second
	MaxResendAfter = 10 * time.Minute
)

// OTPPolicySpec is an OTP policy as an owner sends it: an absent field
// takes the operator's default; one sent must be in bounds (0 is not
// "default", it is out of bounds).
type OTPPolicySpec struct {
	CodeLength  *int `json:"code_length"`
	CodeTTL     *int `json:"code_ttl"`
	MaxAttempts *int `json:"max_attempts"`
	ResendAfter *int `json:"resend_after"`
}

// validate checks each field given against its bounds and returns the
// policy to store (nil when nothing was set).
func (p *OTPPolicySpec) validate(field string) (*OTPPolicy, error) {
	if p == nil {
		return nil, nil
	}
	var out OTPPolicy
	checks := []struct {
		name   string
		v      *int
		lo, hi int
		unit   string
		dst    *int
	}{
		{"code_length", p.CodeLength, MinCodeLength, MaxCodeLength, "digits", &out.CodeLength},
		{"code_ttl", p.CodeTTL, int(MinCodeTTL / time.Second), int(MaxCodeTTL / time.Second), "seconds", &out.CodeTTL},
		{"max_attempts", p.MaxAttempts, MinMaxAttempts, MaxMaxAttempts, "wrong codes", &out.MaxAttempts},
		{"resend_after", p.ResendAfter, int(MinResendAfter / time.Second), int(MaxResendAfter / time.Second), "seconds", &out.ResendAfter},
	}
	for _, c := range checks {
		if c.v == nil {
			continue
		}
		if *c.v < c.lo || *c.v > c.hi {
			return nil, apperr.Field(field+"."+c.name, "invalid_otp_policy", "%s must be %d to %d %s", c.name, c.lo, c.hi, c.unit)
		}
		*c.dst = *c.v
	}
	if out == (OTPPolicy{}) {
		return nil, nil
	}
	return &out, nil
}

// Check reports whether the operator's defaults are within the bounds an
// owner's policy is held to (a binary refuses to start otherwise).
func (lim OTPLimits) Check() error {
	switch {
	case lim.CodeLength < MinCodeLength || lim.CodeLength > MaxCodeLength:
		return fmt.Errorf("code length %d: must be %d to %d digits", lim.CodeLength, MinCodeLength, MaxCodeLength)
	case lim.TTL < MinCodeTTL || lim.TTL > MaxCodeTTL:
		return fmt.Errorf("code lifetime %s: must be %s to %s", lim.TTL, MinCodeTTL, MaxCodeTTL)
	case lim.MaxWrongCodes < MinMaxAttempts || lim.MaxWrongCodes > MaxMaxAttempts:
		return fmt.Errorf("attempts %d: must be %d to %d", lim.MaxWrongCodes, MinMaxAttempts, MaxMaxAttempts)
	case lim.MinGap < MinResendAfter || lim.MinGap > MaxResendAfter:
		return fmt.Errorf("resend wait %s: must be %s to %s", lim.MinGap, MinResendAfter, MaxResendAfter)
	case lim.PerLinkHour < 1 || lim.PerDestinationHour < 1:
		return fmt.Errorf("hourly code limits must be at least 1")
	}
	return nil
}

// orDefaults is lim with each zero field taken from DefaultOTPLimits.
func (lim OTPLimits) orDefaults() OTPLimits {
	d := DefaultOTPLimits
	for _, f := range []struct{ v, def *int }{
		{&lim.CodeLength, &d.CodeLength}, {&lim.MaxWrongCodes, &d.MaxWrongCodes},
		{&lim.PerLinkHour, &d.PerLinkHour}, {&lim.PerDestinationHour, &d.PerDestinationHour},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if lim.TTL == 0 {
		lim.TTL = d.TTL
	}
	if lim.MinGap == 0 {
		lim.MinGap = d.MinGap
	}
	return lim
}

// OTPLimits are the limits that apply to l's codes: the operator's
// defaults d with what the owner set on the link over them.
func (l Link) OTPLimits(d OTPLimits) OTPLimits {
	p := l.OTPPolicy
	if p == nil {
		return d
	}
	if p.CodeLength > 0 {
		d.CodeLength = p.CodeLength
	}
	if p.CodeTTL > 0 {
		d.TTL = time.Duration(p.CodeTTL) * time.Second
	}
	if p.MaxAttempts > 0 {
		d.MaxWrongCodes = p.MaxAttempts
	}
	if p.ResendAfter > 0 {
		d.MinGap = time.Duration(p.ResendAfter) * time.Second
	}
	return d
}

// Policy is lim as an OTP policy with every field set.
func (lim OTPLimits) Policy() OTPPolicy {
	return OTPPolicy{CodeLength: lim.CodeLength, CodeTTL: int(lim.TTL / time.Second),
		MaxAttempts: lim.MaxWrongCodes, ResendAfter: int(lim.MinGap / time.Second)}
}

// IsOTP reports whether a link's recipients prove themselves with a code.
func IsOTP(authType string) bool { return authType == AuthEmailOTP || authType == AuthSMSOTP }
