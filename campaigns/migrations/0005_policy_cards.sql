-- callwise schema, version 5: a card may state the policy's answer to the question asked
-- (dialogue.facts), shown when no top agent's reply states it whole.
ALTER TABLE suggestions DROP CONSTRAINT suggestions_source_check;
ALTER TABLE suggestions ADD CONSTRAINT suggestions_source_check
    CHECK (source IN ('llm', 'exemplar', 'policy', 'override'));
