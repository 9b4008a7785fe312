//! Access rules at the gateway: who may open a tunnel, decided here with no call to Control.
//!
//! [`judge`] is the decision as plain data (the request's facts and the time in, a verdict
//! out). [`Gate`] holds what a decision needs beyond the policy: the keys from the snapshot,
//! the assertion nonces already used, login throttling and recently verified passwords. The
//! `/.kakuremichi/` paths (login page, assertion callback, logout) live in [`endpoint`].

use kakuremichi_proto::access::{
    self, sha256_hex, AccessKeys, AccessPolicy, AllowedUser, SessionCookie, Subject,
};
use kakuremichi_proto::throttle::{self, Attempt, Throttle};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// The session cookie's name.
pub const COOKIE: &str = "km_access";
/// Paths under this prefix are the gateway's own, on every protected hostname.
pub const PREFIX: &str = "/.kakuremichi/";
/// Service tokens start with this; a bearer token without it is the origin's business.
const SERVICE_TOKEN_PREFIX: &str = "kst_";
/// How a service token's bearer is named to the origin (no Control user name holds `:`).
pub const SERVICE_TOKEN_VISITOR: &str = "token:service";
/// How long a verified basic-auth password is remembered, so scripts do not pay for argon2
/// on every request.
const BASIC_CACHE_SECONDS: u64 = 300;
/// Passwords verified at once: each argon2 check takes ~19 MiB for a moment.
const PARALLEL_VERIFICATIONS: usize = 2;
/// Entries kept in the nonce and basic-auth memories at most.
const MEMORY_LIMIT: usize = 100_000;

/// What a request shows of itself, for [`judge`].
#[derive(Debug, Default)]
pub struct Facts<'a> {
    /// The route's hostname (the cookie must have been made for it).
    pub host: &'a str,
    pub path: &'a str,
    pub client: Option<IpAddr>,
    /// `Authorization: Bearer …`
    pub bearer: Option<&'a str>,
    /// `Authorization: Basic …`, decoded.
    pub basic: Option<(String, String)>,
    /// The `km_access` cookie.
    pub cookie: Option<&'a str>,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it; `user` is who the origin is told about (`X-Kakuremichi-User`), and
    /// `credential` whether the request's `Authorization` was ours (and so is removed).
    Pass {
        user: Option<String>,
        credential: bool,
    },
    /// The client's address is not allowed.
    Forbidden,
    /// Basic credentials to check against the tunnel password before passing.
    CheckBasic { user: String, password: String },
    /// A credential was sent and is wrong.
    Unauthorized,
    /// No credential: send the visitor to log in.
    Login,
}

/// Decide `facts` under `policy` at `now` (Unix seconds) with the cookie key `cookie_key`.
pub fn judge(policy: &AccessPolicy, cookie_key: Option<&[u8]>, facts: &Facts, now: u64) -> Verdict {
    let pass = |user: Option<String>, credential| Verdict::Pass { user, credential };
    if let Some(ip) = facts.client {
        if !policy.admits(ip) {
            return Verdict::Forbidden;
        }
    }
    if !policy.needs_login() || policy.bypasses(facts.path) {
        return pass(None, false);
    }
    if let Some(token) = facts.bearer.filter(|t| t.starts_with(SERVICE_TOKEN_PREFIX)) {
        let hash = sha256_hex(token.as_bytes());
        return match policy.service_tokens.contains(&hash) {
            true => pass(Some(SERVICE_TOKEN_VISITOR.into()), true),
            false => Verdict::Unauthorized,
        };
    }
    if let Some((user, password)) = &facts.basic {
        return match policy.password_hash {
            Some(_) => Verdict::CheckBasic {
                user: user.clone(),
                password: password.clone(),
            },
            None => Verdict::Unauthorized,
        };
    }
    let opened = match (facts.cookie, cookie_key) {
        (Some(value), Some(key)) => access::open_cookie(key, value, facts.host, now).ok(),
        _ => None,
    };
    // The tunnel's session length holds for cookies made before it was shortened.
    let opened = opened.filter(|cookie| cookie.issued + policy.session_hours * 3600 > now);
    let Some(cookie) = opened else {
        return Verdict::Login;
    };
    match cookie.subject {
        Subject::User(user) if allowed(policy, &user, Some(cookie.issued)) => {
            pass(Some(user.name), false)
        }
        Subject::Password { epoch }
            if policy.password_hash.is_some() && epoch == policy.password_epoch() =>
        {
            pass(None, false)
        }
        _ => Verdict::Login,
    }
}

/// Whether `user` may open the tunnel, with a session made at `issued` (`None`: logging in
/// now, whatever the clocks of Control and this gateway say).
fn allowed(policy: &AccessPolicy, user: &AllowedUser, issued: Option<u64>) -> bool {
    policy.users.as_ref().is_some_and(|users| {
        users
            .iter()
            .any(|u| u.id == user.id && issued.is_none_or(|at| at >= u.sessions_since))
    })
}

/// The keys from the snapshot, decoded once.
struct Keys {
    assertion: Vec<u8>,
    cookie: Vec<u8>,
    login_url: Option<String>,
}

/// Login counters for `/metrics`.
#[derive(Default)]
pub struct AccessMetrics {
    /// Requests refused by an IP rule.
    pub forbidden: AtomicU64,
    /// Wrong passwords, tokens, assertions and cookies that were sent.
    pub failed_logins: AtomicU64,
    /// Logins made (password or assertion).
    pub logins: AtomicU64,
    /// Login attempts refused unchecked because of throttling.
    pub throttled: AtomicU64,
}

/// Everything the access checks keep between requests.
pub struct Gate {
    keys: RwLock<Option<Arc<Keys>>>,
    /// Assertion nonces already used, with their expiry.
    used_nonces: Mutex<HashMap<String, u64>>,
    throttle: Mutex<Throttle>,
    /// SHA-256 of (tunnel, password hash, password) verified recently → until when.
    verified: Mutex<HashMap<String, u64>>,
    verifying: smol::lock::Semaphore,
    pub metrics: AccessMetrics,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            keys: RwLock::default(),
            used_nonces: Mutex::default(),
            throttle: Mutex::default(),
            verified: Mutex::default(),
            verifying: smol::lock::Semaphore::new(PARALLEL_VERIFICATIONS),
            metrics: AccessMetrics::default(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere cannot leave them half-updated.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a login attempt was not checked.
pub struct Throttled {
    pub retry_after: u64,
}

impl Gate {
    /// Take the keys from a snapshot; without them, cookies and assertions are refused.
    pub fn update(&self, keys: Option<&AccessKeys>) {
        let decoded = keys.and_then(|keys| {
            Some(Arc::new(Keys {
                assertion: access::decode_key(&keys.assertion_public_key).ok()?,
                cookie: access::decode_key(&keys.cookie_key).ok()?,
                login_url: keys.login_url.clone(),
            }))
        });
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = decoded;
    }

    fn keys(&self) -> Option<Arc<Keys>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// [`judge`] with the current cookie key.
    pub fn judge(&self, policy: &AccessPolicy, facts: &Facts, now: u64) -> Verdict {
        let keys = self.keys();
        let verdict = judge(
            policy,
            keys.as_ref().map(|k| k.cookie.as_slice()),
            facts,
            now,
        );
        match verdict {
            Verdict::Forbidden => self.metrics.forbidden.fetch_add(1, Ordering::Relaxed),
            Verdict::Unauthorized => self.metrics.failed_logins.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        verdict
    }

    /// Control's login page for tunnels open to Control users.
    pub fn login_url(&self) -> Option<String> {
        self.keys()?.login_url.clone()
    }

    /// A session cookie's value for `subject` on `host`, lasting `hours`.
    pub fn seal(&self, host: &str, subject: Subject, hours: u64, now: u64) -> Option<String> {
        let keys = self.keys()?;
        let cookie = SessionCookie {
            host: host.to_string(),
            subject,
            expires: now + hours * 3600,
            issued: now,
        };
        Some(access::seal_cookie(&keys.cookie, &cookie))
    }

    /// Check an assertion for `host` and use up its nonce: the user it names, if it is
    /// valid, unused, made for the browser whose state cookie is `browser_state`, and the
    /// user may open the tunnel.
    pub fn redeem(
        &self,
        policy: &AccessPolicy,
        token: &str,
        host: &str,
        browser_state: Option<&str>,
        now: u64,
    ) -> Option<AllowedUser> {
        let keys = self.keys()?;
        let assertion = access::verify_assertion(&keys.assertion, token, host, now)
            .ok()
            .filter(|a| !a.state.is_empty() && browser_state == Some(a.state.as_str()));
        let fresh = assertion.filter(|a| {
            let mut used = lock(&self.used_nonces);
            if used.len() >= MEMORY_LIMIT {
                used.retain(|_, expires| *expires > now);
            }
            used.insert(a.nonce.clone(), a.expires).is_none()
        });
        let user = fresh
            .map(|a| a.user)
            .filter(|user| allowed(policy, user, None));
        let counter = match user {
            Some(_) => &self.metrics.logins,
            None => &self.metrics.failed_logins,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        user
    }

    /// Check `password` against the tunnel's hash, throttled per client address and per
    /// tunnel; the attempt is counted before the check, so parallel guesses are counted too.
    pub async fn check_password(
        &self,
        tunnel: &str,
        policy: &AccessPolicy,
        client: IpAddr,
        password: &str,
        now: u64,
    ) -> Result<bool, Throttled> {
        let Some(hash) = policy.password_hash.clone() else {
            return Ok(false);
        };
        let remembered = sha256_hex(format!("{tunnel}\n{hash}\n{password}").as_bytes());
        if lock(&self.verified)
            .get(&remembered)
            .is_some_and(|until| *until > now)
        {
            return Ok(true);
        }
        let address = format!("{tunnel}:{}", throttle::address_key(client));
        let account = format!("tunnel:{tunnel}");
        let attempt = Attempt {
            address: &address,
            account: &account,
        };
        if let Err(retry_after) = lock(&self.throttle).begin(&attempt, now) {
            self.metrics.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(Throttled { retry_after });
        }
        let good = {
            let _permit = self.verifying.acquire().await;
            let password = password.to_string();
            smol::unblock(move || verify_password(&password, &hash)).await
        };
        if good {
            lock(&self.throttle).succeeded(&attempt);
            let mut verified = lock(&self.verified);
            if verified.len() >= MEMORY_LIMIT {
                verified.retain(|_, until| *until > now);
            }
            verified.insert(remembered, now + BASIC_CACHE_SECONDS);
        } else {
            self.metrics.failed_logins.fetch_add(1, Ordering::Relaxed);
        }
        Ok(good)
    }
}

fn verify_password(password: &str, stored: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    password.len() <= 1024
        && PasswordHash::new(stored).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [9; 32];

    fn policy() -> AccessPolicy {
        AccessPolicy {
            users: Some(vec![AllowedUser {
                id: "usr_a".into(),
                name: "alice".into(),
                ..Default::default()
            }]),
            password_hash: Some("$argon2id$stand-in".into()),
            service_tokens: vec![sha256_hex(b"kst_good")],
            allow_ips: vec!["10.0.0.0/8".parse().unwrap()],
            bypass: vec!["/health".into()],
            session_hours: 24,
            ..Default::default()
        }
    }

    fn facts<'a>() -> Facts<'a> {
        Facts {
            host: "app.example.com",
            path: "/",
            client: Some("10.1.2.3".parse().unwrap()),
            ..Default::default()
        }
    }

    fn cookie(subject: Subject, host: &str, expires: u64) -> String {
        let cookie = SessionCookie {
            host: host.into(),
            subject,
            expires,
            issued: 900,
        };
        access::seal_cookie(&KEY, &cookie)
    }

    #[test]
    fn each_credential_is_judged_in_order() {
        let policy = policy();
        let judge = |facts: &Facts| judge(&policy, Some(&KEY), facts, 1000);
        let pass = |user: Option<&str>, credential| Verdict::Pass {
            user: user.map(Into::into),
            credential,
        };
        // IP rules come first, even for bypass paths.
        let outsider = Facts {
            client: Some("192.0.2.1".parse().unwrap()),
            path: "/health",
            ..facts()
        };
        assert_eq!(judge(&outsider), Verdict::Forbidden);
        assert_eq!(
            judge(&Facts {
                path: "/health",
                ..facts()
            }),
            pass(None, false)
        );
        assert_eq!(judge(&facts()), Verdict::Login);
        let token = Facts {
            bearer: Some("kst_good"),
            ..facts()
        };
        assert_eq!(judge(&token), pass(Some(SERVICE_TOKEN_VISITOR), true));
        let wrong = Facts {
            bearer: Some("kst_bad"),
            ..facts()
        };
        assert_eq!(judge(&wrong), Verdict::Unauthorized);
        // Someone else's bearer token is the origin's business: the visitor still logs in.
        let foreign = Facts {
            bearer: Some("eyJhbGciOi"),
            ..facts()
        };
        assert_eq!(judge(&foreign), Verdict::Login);
        let basic = Facts {
            basic: Some(("ci".into(), "pw".into())),
            ..facts()
        };
        assert!(matches!(judge(&basic), Verdict::CheckBasic { .. }));

        let alice = Subject::User(AllowedUser {
            id: "usr_a".into(),
            name: "alice".into(),
            ..Default::default()
        });
        let good = cookie(alice.clone(), "app.example.com", 2000);
        let with = |value: &str| {
            judge(&Facts {
                cookie: Some(value),
                ..facts()
            })
        };
        assert_eq!(with(&good), pass(Some("alice"), false));
        // Expired, for another host, forged, or for a user no longer allowed: log in again.
        assert_eq!(
            with(&cookie(alice.clone(), "app.example.com", 1000)),
            Verdict::Login
        );
        assert_eq!(with(&cookie(alice, "db.example.com", 2000)), Verdict::Login);
        let forged = access::seal_cookie(
            &[1; 32],
            &SessionCookie {
                host: "app.example.com".into(),
                subject: Subject::Password {
                    epoch: policy.password_epoch(),
                },
                expires: 2000,
                issued: 900,
            },
        );
        assert_eq!(with(&forged), Verdict::Login);
        let bob = Subject::User(AllowedUser {
            id: "usr_b".into(),
            name: "bob".into(),
            ..Default::default()
        });
        assert_eq!(with(&cookie(bob, "app.example.com", 2000)), Verdict::Login);
        // A password cookie holds until the password changes.
        let epoch = Subject::Password {
            epoch: policy.password_epoch(),
        };
        assert_eq!(
            with(&cookie(epoch, "app.example.com", 2000)),
            pass(None, false)
        );
        let stale = Subject::Password {
            epoch: "old".into(),
        };
        assert_eq!(
            with(&cookie(stale, "app.example.com", 2000)),
            Verdict::Login
        );
        // Sessions made before the user's sessions ended, or longer ago than the tunnel's
        // (since shortened) session length, log in again.
        let ended = AccessPolicy {
            users: Some(vec![AllowedUser {
                id: "usr_a".into(),
                name: "alice".into(),
                sessions_since: 950,
            }]),
            ..policy.clone()
        };
        assert_eq!(
            super::judge(
                &ended,
                Some(&KEY),
                &Facts {
                    cookie: Some(&good),
                    ..facts()
                },
                1000
            ),
            Verdict::Login
        );
        let shortened = AccessPolicy {
            session_hours: 1,
            ..policy.clone()
        };
        let at = 900 + 3600;
        assert_eq!(
            super::judge(
                &shortened,
                Some(&KEY),
                &Facts {
                    cookie: Some(&good),
                    ..facts()
                },
                at
            ),
            Verdict::Login
        );
        // A public tunnel lets everyone through.
        assert_eq!(
            super::judge(&AccessPolicy::default(), None, &facts(), 1000),
            pass(None, false)
        );
    }

    #[test]
    fn assertions_are_used_once_and_only_by_allowed_users() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let gate = Gate::default();
        gate.update(Some(&AccessKeys {
            assertion_public_key: access::encode_key(pair.public_key().as_ref()),
            cookie_key: access::encode_key(&KEY),
            login_url: None,
        }));
        let assert = |id: &str, nonce: &str| {
            access::sign_assertion(
                &pair,
                &access::Assertion {
                    host: "app.example.com".into(),
                    user: AllowedUser {
                        id: id.into(),
                        name: id.into(),
                        ..Default::default()
                    },
                    expires: 1030,
                    nonce: nonce.into(),
                    state: "s1".into(),
                },
            )
        };
        let policy = policy();
        let token = assert("usr_a", "n1");
        assert!(gate
            .redeem(&policy, &token, "app.example.com", Some("s1"), 1000)
            .is_some());
        assert!(
            gate.redeem(&policy, &token, "app.example.com", Some("s1"), 1001)
                .is_none(),
            "replayed"
        );
        assert!(gate
            .redeem(
                &policy,
                &assert("usr_a", "n2"),
                "db.example.com",
                Some("s1"),
                1000
            )
            .is_none());
        assert!(gate
            .redeem(
                &policy,
                &assert("usr_b", "n3"),
                "app.example.com",
                Some("s1"),
                1000
            )
            .is_none());
        assert!(gate
            .redeem(
                &policy,
                &assert("usr_a", "n4"),
                "app.example.com",
                Some("s1"),
                1031
            )
            .is_none());
        // Only from the browser that began the login.
        let fresh = assert("usr_a", "n5");
        for state in [None, Some(""), Some("s2")] {
            assert!(gate
                .redeem(&policy, &fresh, "app.example.com", state, 1000)
                .is_none());
        }
        assert_eq!(gate.metrics.logins.load(Ordering::Relaxed), 1);
        assert_eq!(gate.metrics.failed_logins.load(Ordering::Relaxed), 7);
    }
}
