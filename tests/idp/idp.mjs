// A test OpenID Connect provider (npm `oidc-provider`) shaped like the Data Lake's Keycloak:
// tokens carry `preferred_username`, `realm_access.roles` and `groups` as `/a/b` paths.
// For stackhub's tests and for trying OIDC locally (scripts/oidc-dev). NOT for production.
//
// Environment:
//   IDP_PORT                 port on 127.0.0.1 (default 9090); issuer http://127.0.0.1:PORT
//   IDP_CLIENT_ID            the hub's client id (default stackhub)
//   IDP_CLIENT_SECRET        its secret (default stackhub-dev-secret)
//   IDP_REDIRECT_URIS        comma-separated redirect URIs (default http://127.0.0.1:8000/hub/oauth_callback)
//   IDP_POST_LOGOUT_URIS     comma-separated post-logout redirect URIs (default http://127.0.0.1:8000/hub/login)
//   IDP_ACCESS_TTL           access token lifetime in seconds (default 300; tests use a few seconds)
//
// Test-only control endpoint: after POST /__test/rogue-keys every id_token the token endpoint
// returns is re-signed with a key the provider never publishes (same `kid` header), i.e. it is
// "signed by another key"; DELETE /__test/rogue-keys goes back to normal.
// POST /__test/id-token with a JSON object of claims (e.g. {"iss": "..."}, {"aud": "..."},
// {"exp": 1}) makes the token endpoint return id_tokens with those claims replaced, validly
// signed with the real key; DELETE /__test/id-token goes back to normal.
//
// Users (password = name + "-pw"):
//   alice  stack-jupyter + stack-jupyter-medium, groups /services/dask/stack-dask-medium, /projects/eo-lab
//   carol  stack-jupyter + stack-jupyter-low + stack-jupyter-high + stackhub-admin (admin), group /admins
//   bob    no stack-jupyter role (refused by the hub)
//   eve@x.org, eve+x.org  stack-jupyter; two accounts whose names normalize to one hub user
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT || 9090);
const issuer = `http://127.0.0.1:${port}`;
const list = (v, d) => (v || d).split(',').map((s) => s.trim()).filter(Boolean);

const USERS = {
  alice: {
    roles: ['offline_access', 'default-roles-dedl', 'stack-jupyter', 'stack-jupyter-medium'],
    groups: ['/services/dask/stack-dask-medium', '/projects/eo-lab'],
    name: 'Alice Example',
  },
  carol: {
    roles: ['offline_access', 'stack-jupyter', 'stack-jupyter-low', 'stack-jupyter-high', 'stackhub-admin'],
    groups: ['/admins'],
    name: 'Carol Admin',
  },
  bob: {
    roles: ['offline_access', 'default-roles-dedl', 'stack-dask'],
    groups: ['/services/dask/stack-dask-low'],
    name: 'Bob Nojupyter',
  },
  // Two different accounts whose names the hub normalizes to the same user `eve-x.org`.
  'eve@x.org': { roles: ['offline_access', 'stack-jupyter'], groups: [], name: 'Eve At' },
  'eve+x.org': { roles: ['offline_access', 'stack-jupyter'], groups: [], name: 'Eve Plus' },
};

function rsaJwk(kid) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
}

const signing = rsaJwk('k1');
const signingKey = createPrivateKey({ key: signing, format: 'jwk' });
let rogue = null; // a private key, while tokens are to be signed by another key
let overrides = null; // claims replaced in id_tokens

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.IDP_CLIENT_ID || 'stackhub',
      client_secret: process.env.IDP_CLIENT_SECRET || 'stackhub-dev-secret',
      redirect_uris: list(process.env.IDP_REDIRECT_URIS, 'http://127.0.0.1:8000/hub/oauth_callback'),
      post_logout_redirect_uris: list(process.env.IDP_POST_LOGOUT_URIS, 'http://127.0.0.1:8000/hub/login'),
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: [signing] },
  cookies: { keys: ['stackhub-test-idp-cookie-key'] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Sign out at once (a real IdP asks; tests and local trials need no extra click).
      logoutSource: async (ctx, form) => {
        ctx.type = 'html';
        ctx.body = `<!DOCTYPE html><html><head><title>Signing out</title></head><body>
          ${form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>')}
          <button type="submit" form="op.logoutForm">Sign out</button>
          <script>document.getElementById('op.logoutForm').submit();</script></body></html>`;
      },
    },
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'roles'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
    roles: ['realm_access'],
  },
  conformIdTokenClaims: false,
  // No skew allowance, so tests that let a token expire see it refused at once.
  clockTolerance: 0,
  ttl: {
    AccessToken: Number(process.env.IDP_ACCESS_TTL || 300),
    IdToken: 3600,
    RefreshToken: 86400,
    Grant: 86400,
    Session: 86400,
    Interaction: 600,
    AuthorizationCode: 60,
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  // The hub is a first-party client: grant what it asks for without a consent screen.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access profile email groups roles');
    grant.addOIDCClaims(['preferred_username', 'name', 'email', 'groups', 'realm_access']);
    await grant.save();
    return grant;
  },
  findAccount: async (_ctx, id) => {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      claims: async () => ({
        sub: id,
        preferred_username: id,
        name: user.name,
        email: `${id}@example.org`,
        email_verified: true,
        groups: user.groups,
        realm_access: { roles: user.roles },
      }),
    };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = `<!DOCTYPE html><html><body><h1>${escape(out.error)}</h1><p>${escape(out.error_description || '')}</p></body></html>`;
  },
});
provider.proxy = false;

const loginForm = (uid, error) => `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test IdP sign-in</title></head>
<body>
  <h1>Sign in to the test identity provider</h1>
  ${error ? `<p class="error">${escape(error)}</p>` : ''}
  <form method="post" action="/interaction/${escape(uid)}/login">
    <label>Username <input name="username" id="username" autocomplete="off"></label>
    <label>Password <input name="password" id="password" type="password"></label>
    <button type="submit" id="kc-login">Sign in</button>
  </form>
</body></html>`;

async function readForm(req, raw = false) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const text = Buffer.concat(chunks).toString('utf8');
  return raw ? text : new URLSearchParams(text);
}

provider.use(async (ctx, next) => {
  const path = ctx.path;
  if (path === '/__test/rogue-keys') {
    if (ctx.method === 'POST') rogue = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    else if (ctx.method === 'DELETE') rogue = null;
    ctx.status = 204;
    return;
  }
  if (path === '/__test/id-token') {
    if (ctx.method === 'POST') overrides = JSON.parse((await readForm(ctx.req, true)) || '{}');
    else if (ctx.method === 'DELETE') overrides = null;
    ctx.status = 204;
    return;
  }
  if (path === '/token') {
    await next();
    let body = ctx.body;
    if ((rogue || overrides) && body) {
      if (typeof body === 'string' || Buffer.isBuffer(body)) body = JSON.parse(body.toString());
      if (body.id_token) {
        let [header, payload] = body.id_token.split('.');
        if (overrides) {
          const claims = { ...JSON.parse(Buffer.from(payload, 'base64url').toString()), ...overrides };
          payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
        }
        const key = rogue || signingKey;
        const sig = sign('sha256', Buffer.from(`${header}.${payload}`), key).toString('base64url');
        ctx.body = { ...body, id_token: `${header}.${payload}.${sig}` };
      }
    }
    return;
  }
  const m = path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (!m[2] && ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = loginForm(details.uid);
    return;
  }
  if (m[2] && ctx.method === 'POST') {
    const form = await readForm(ctx.req);
    const username = form.get('username') || '';
    if (!USERS[username] || form.get('password') !== `${username}-pw`) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginForm(details.uid, 'Invalid username or password.');
      return;
    }
    await provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
    ctx.respond = false;
    return;
  }
  return next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`READY ${issuer}`);
});
