-- Core schema: owners and their API keys, links, recipient sessions,
-- notifications, OTP challenges and the transactional outbox.

CREATE TABLE owners (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id     uuid NOT NULL REFERENCES owners (id),
    prefix       text NOT NULL UNIQUE,
    key_hash     bytea NOT NULL UNIQUE,   -- sha256 of the key; the key itself is shown once
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE links (
    id               uuid PRIMARY KEY,
    owner_id         uuid NOT NULL REFERENCES owners (id),
    token_hash       bytea NOT NULL UNIQUE,  -- keyed hash: the lookup key
    token_sealed     bytea NOT NULL,         -- AES-GCM, so owners can see the URL again
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'expired', 'exhausted', 'revoked')),
    link_type        text NOT NULL CHECK (link_type IN ('view', 'download', 'upload', 'editor')),
    auth_type        text NOT NULL CHECK (auth_type IN ('none', 'password', 'email_otp', 'sms_otp')),
    recipient        text,                   -- normalised email / E.164 phone of OTP links
    password_hash    text,                   -- argon2id PHC string of password links
    targets          jsonb NOT NULL,
    expires_at       timestamptz NOT NULL,
    max_access_count integer CHECK (max_access_count >= 1),
    access_count     integer NOT NULL DEFAULT 0,
    title            text NOT NULL DEFAULT '',
    message          text NOT NULL DEFAULT '',
    verify_attempts  integer NOT NULL DEFAULT 0, -- charged before each password check
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    ended_at         timestamptz,            -- when it stopped being active (purge clock)
    last_accessed_at timestamptz,
    CHECK (max_access_count IS NULL OR access_count <= max_access_count)
);
CREATE INDEX links_owner_created ON links (owner_id, created_at, id);
CREATE INDEX links_owner_expires ON links (owner_id, expires_at, id);
CREATE INDEX links_owner_recipient ON links (owner_id, recipient) WHERE recipient IS NOT NULL;
CREATE INDEX links_targets ON links USING gin (targets jsonb_path_ops);
CREATE INDEX links_due ON links (expires_at) WHERE status = 'active';
CREATE INDEX links_ended ON links (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE access_sessions (
    id         uuid PRIMARY KEY,
    link_id    uuid NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX access_sessions_link ON access_sessions (link_id);
CREATE INDEX access_sessions_expires ON access_sessions (expires_at);

CREATE TABLE notifications (
    id          uuid PRIMARY KEY,
    owner_id    uuid NOT NULL REFERENCES owners (id),
    link_id     uuid NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    channel     text NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient   text NOT NULL,
    message     text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    provider_id text,
    sent_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_link ON notifications (link_id, created_at);
CREATE INDEX notifications_queued ON notifications (updated_at) WHERE status = 'queued';

CREATE TABLE otp_challenges (
    id            uuid PRIMARY KEY,
    link_id       uuid NOT NULL REFERENCES links (id) ON DELETE CASCADE,
    channel       text NOT NULL CHECK (channel IN ('email', 'sms')),
    recipient     text NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'sent', 'failed', 'verified', 'expired', 'locked')),
    code_hash     bytea,                 -- HMAC of the code; the code itself is never stored
    wrong_codes   integer NOT NULL DEFAULT 0,
    send_attempts integer NOT NULL DEFAULT 0,
    last_error    text,
    provider_id   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX otp_challenges_link ON otp_challenges (link_id, created_at DESC);
CREATE INDEX otp_challenges_recipient ON otp_challenges (recipient, created_at DESC);
CREATE INDEX otp_challenges_open ON otp_challenges (expires_at) WHERE status IN ('pending', 'sent');

CREATE TABLE outbox (
    id           uuid PRIMARY KEY,     -- the event id, UUIDv7, also Nats-Msg-Id
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

---- create above / drop below ----

DROP TABLE outbox;
DROP TABLE otp_challenges;
DROP TABLE notifications;
DROP TABLE access_sessions;
DROP TABLE links;
DROP TABLE api_keys;
DROP TABLE owners;
