-- callwise schema, version 4: the agent's wrap-up note with the call, and signed-out tokens.

-- The note the agent saved with the disposition (reason, agreed, next_step; redacted by the
-- store like every free text), and who saved it.
ALTER TABLE calls ADD COLUMN wrap_up_note jsonb;
ALTER TABLE calls ADD COLUMN wrapped_up_by text;

-- A token signed out before it expired (assist.auth): its sha256, kept until it would have
-- expired anyway, so that a restart does not bring it back.
CREATE TABLE revoked_tokens (
    token_sha256  text PRIMARY KEY,
    username      text NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);
