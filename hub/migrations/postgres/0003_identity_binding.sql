-- The identity-provider account each user is bound to: the provider's issuer and the `sub` of
-- the account that created the user or first logged in as them. Checked at every OpenID
-- Connect login; one account binds one user. Keep in step with the other database's 0003.
ALTER TABLE users ADD COLUMN idp_issuer TEXT;
ALTER TABLE users ADD COLUMN idp_subject TEXT;
CREATE UNIQUE INDEX users_idp_account ON users (idp_issuer, idp_subject);
