// The OpenID provider the single sign-on tests (crates/tidings/tests/oidc.rs) run on loopback:
// oidc-provider, certified by the OpenID Foundation, with its development sign-in and consent
// pages (any login name signs in as the account of that name). It prints "READY <issuer>"
// once listening, then reads the relying party's redirect URI as the first line of its standard
// input (the test starts the server under test in between, knowing the issuer), prints
// "CONFIGURED", and exits when its standard input closes.
//
// Clients:
//   tidings-rs      id_tokens signed with RS256
//   tidings-es      id_tokens signed with ES256
//   tidings-tamper  RS256, but this script changes the `sub` of every id_token it issues to
//                   that client after signing, so the relying party must refuse it.
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import readline from 'node:readline';
import Provider from 'oidc-provider';

function jwk(type, options, kid, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'rsa-1', 'RS256'),
  jwk('ec', { namedCurve: 'P-256' }, 'ec-1', 'ES256'),
];

const client = (redirectUri, id, alg) => ({
  client_id: id,
  client_secret: `secret-of-${id}`,
  redirect_uris: [redirectUri],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: alg,
});

const server = http.createServer();
function configure(issuer, redirectUri) {
  const provider = new Provider(issuer, {
    clients: [
      client(redirectUri, 'tidings-rs', 'RS256'),
      client(redirectUri, 'tidings-es', 'ES256'),
      client(redirectUri, 'tidings-tamper', 'RS256'),
    ],
    jwks: { keys },
    cookies: { keys: ['tidings-test-cookie-key'] },
    // Many providers put profile claims in the id_token; the relying party reads
    // preferred_username from there.
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'] },
    pkce: { required: () => true },
    async findAccount(_ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, name: `Person ${id}` };
        },
      };
    },
  });
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path !== '/token' || !ctx.body || typeof ctx.body.id_token !== 'string') return;
    const auth = ctx.get('authorization');
    const clientId = decodeURIComponent(
      Buffer.from(auth.replace(/^Basic /, ''), 'base64').toString().split(':')[0],
    );
    if (clientId !== 'tidings-tamper') return;
    const [head, payload, signature] = ctx.body.id_token.split('.');
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    claims.sub = 'someone-else';
    const forged = Buffer.from(JSON.stringify(claims)).toString('base64url');
    ctx.body = { ...ctx.body, id_token: `${head}.${forged}.${signature}` };
  });
  server.on('request', provider.callback());
}

server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  console.log(`READY ${issuer}`);
  let configured = false;
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    if (configured || !line.trim()) return;
    configure(issuer, line.trim());
    configured = true;
    console.log('CONFIGURED');
  });
  lines.on('close', () => process.exit(0));
});
