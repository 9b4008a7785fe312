//! People, their sessions and second factors, and admin API tokens.

use super::{all, get, put, Store};
use crate::auth::{self, sessions::SessionRecord, Role, UserRecord};
use crate::error::Error;
use crate::model::TokenRecord;
use heed::{RoTxn, RwTxn};

/// A second factor a login offers: the TOTP step its code matched, or the forms a recovery
/// code may be stored in.
pub enum SecondFactor {
    Step(u64),
    Recovery(Vec<String>),
}

impl Store {
    /// A new admin API token named `name`, expiring at `expires_at` if given: its record and
    /// the token itself (shown once; only its hash is kept).
    pub fn create_token(
        &self,
        name: &str,
        expires_at: Option<u64>,
        scope: crate::model::TokenScope,
    ) -> Result<(TokenRecord, String), Error> {
        crate::model::check_name(name).map_err(|why| Error::invalid("name", why))?;
        let token = auth::new_secret("kmt");
        let record = TokenRecord {
            id: auth::new_id("tok"),
            name: name.to_string(),
            created_at: auth::unix_now(),
            expires_at,
            scope,
        };
        self.write_accounts(|s, wtxn| put(&s.tokens, wtxn, &auth::hash_secret(&token), &record))?;
        Ok((record, token))
    }

    /// What `token` may do, if it is a live API token.
    pub fn token_scope(&self, token: &str) -> Result<Option<crate::model::TokenScope>, Error> {
        let rtxn = self.env.read_txn()?;
        Ok(
            get::<TokenRecord>(&self.tokens, &rtxn, &auth::hash_secret(token))?
                .filter(|record| record.is_live(auth::unix_now()))
                .map(|record| record.scope),
        )
    }

    /// Every admin API token's record, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let mut tokens: Vec<TokenRecord> = all(&self.tokens, &rtxn)?;
        tokens.sort_by_key(|t| t.created_at);
        Ok(tokens)
    }

    /// Revoke the token with record id `id`.
    pub fn revoke_token(&self, id: &str) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| {
            let mut key = None;
            for entry in s.tokens.iter(wtxn)? {
                let (hash, bytes) = entry?;
                let record: TokenRecord = serde_json::from_slice(bytes)
                    .map_err(|e| Error::Store(format!("corrupt token record: {e}")))?;
                if record.id == id {
                    key = Some(hash.to_string());
                }
            }
            let key = key.ok_or_else(|| Error::not_found("token", id))?;
            s.tokens.delete(wtxn, &key)?;
            Ok(())
        })
    }

    /// Run `change` in one write transaction that leaves the revision alone: sessions and
    /// admin tokens are not part of any node's configuration, and a login must not make every
    /// node fetch its snapshot again. (Users are: gateways admit them to tunnels.)
    fn write_accounts<T>(
        &self,
        change: impl FnOnce(&Self, &mut RwTxn) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut wtxn = self.env.write_txn()?;
        let value = change(self, &mut wtxn)?;
        wtxn.commit()?;
        // Some account changes move the revision too (ending a user's tunnel sessions).
        self.announce_commit();
        Ok(value)
    }

    /// How many users exist.
    pub fn user_count(&self) -> Result<u64, Error> {
        let rtxn = self.env.read_txn()?;
        Ok(self.users.len(&rtxn)?)
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let mut users: Vec<UserRecord> = all(&self.users, &rtxn)?;
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    /// A user by id.
    pub fn user(&self, id: &str) -> Result<Option<UserRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        get(&self.users, &rtxn, id)
    }

    /// A user by name.
    pub fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        match get::<String>(&self.user_names, &rtxn, name)? {
            Some(id) => get(&self.users, &rtxn, &id),
            None => Ok(None),
        }
    }

    /// Add a user. With `only_if_first`, refuse when any user exists (the setup page and
    /// `user add --admin` on a fresh store race no one: the check and the write are one
    /// transaction).
    pub fn create_user(
        &self,
        name: &str,
        role: Role,
        password_hash: String,
        only_if_first: bool,
    ) -> Result<UserRecord, Error> {
        auth::check_user_name(name).map_err(|m| Error::invalid("name", m))?;
        self.write(|s, wtxn| {
            if only_if_first && s.users.len(wtxn)? > 0 {
                return Err(Error::conflict("name", "an administrator already exists"));
            }
            if get::<String>(&s.user_names, wtxn, name)?.is_some() {
                return Err(Error::conflict("name", format!("{name:?} is taken")));
            }
            let user = UserRecord {
                id: auth::new_id("usr"),
                name: name.to_string(),
                role,
                password_hash,
                disabled: false,
                created_at: auth::unix_now(),
                totp_secret: None,
                recovery_codes: Vec::new(),
                sessions_since: 0,
                totp_last_step: 0,
            };
            put(&s.users, wtxn, &user.id, &user)?;
            put(&s.user_names, wtxn, name, &user.id)?;
            Ok(user)
        })
    }

    /// Change a user with `change`; refuses a change that takes away the last enabled
    /// administrator. A change of password, role or enabled state ends the user's sessions,
    /// on Control and on every tunnel, and moves the revision so gateways hear of it.
    pub fn update_user(
        &self,
        id: &str,
        change: impl FnOnce(&mut UserRecord),
    ) -> Result<UserRecord, Error> {
        self.update_user_keeping(id, None, change)
    }

    /// [`Store::update_user`], keeping the Control session `keep` (the user's own, when they
    /// change their own password).
    pub fn update_user_keeping(
        &self,
        id: &str,
        keep: Option<&str>,
        change: impl FnOnce(&mut UserRecord),
    ) -> Result<UserRecord, Error> {
        self.write_accounts(|s, wtxn| {
            let mut user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            let was_admin = user.is_active_admin();
            let credentials = |u: &UserRecord| (u.role, u.disabled, u.password_hash.clone());
            let before = credentials(&user);
            change(&mut user);
            if credentials(&user) != before {
                s.end_sessions_of(wtxn, &mut user, keep)?;
            }
            put(&s.users, wtxn, id, &user)?;
            if was_admin {
                s.check_an_admin_remains(wtxn)?;
            }
            Ok(user)
        })
    }

    /// Use up a second factor of a user's, if it is good: a TOTP step later than the last one
    /// used, or an unused recovery code. Checked and spent in one transaction, so two
    /// requests with one code cannot both pass.
    pub fn spend_second_factor(&self, id: &str, spent: &SecondFactor) -> Result<bool, Error> {
        self.write_accounts(|s, wtxn| {
            let mut user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            let good = match spent {
                SecondFactor::Step(step) => {
                    let fresh = *step > user.totp_last_step;
                    user.totp_last_step = user.totp_last_step.max(*step);
                    fresh
                }
                SecondFactor::Recovery(forms) => {
                    let before = user.recovery_codes.len();
                    user.recovery_codes.retain(|c| !forms.contains(c));
                    user.recovery_codes.len() < before
                }
            };
            if good {
                put(&s.users, wtxn, id, &user)?;
            }
            Ok(good)
        })
    }

    /// End every session of a user, on Control and on every tunnel.
    pub fn end_all_sessions(&self, id: &str) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| {
            let mut user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            s.end_sessions_of(wtxn, &mut user, None)?;
            put(&s.users, wtxn, id, &user)
        })
    }

    /// End `user`'s Control sessions but `keep`, and (through `sessions_since`, pushed to the
    /// gateways with the moved revision, which also carries a new role or enabled state)
    /// their tunnel sessions. The caller stores `user`.
    fn end_sessions_of(
        &self,
        wtxn: &mut RwTxn,
        user: &mut UserRecord,
        keep: Option<&str>,
    ) -> Result<(), Error> {
        user.sessions_since = auth::unix_now().max(user.sessions_since);
        self.bump_revision(wtxn)?;
        self.delete_sessions_where(wtxn, |session| {
            session.user_id == user.id && Some(session.id.as_str()) != keep
        })
    }

    /// Remove a user and their sessions; refuses to remove the last enabled administrator.
    pub fn delete_user(&self, id: &str) -> Result<(), Error> {
        self.write(|s, wtxn| {
            let user: UserRecord =
                get(&s.users, wtxn, id)?.ok_or_else(|| Error::not_found("user", id))?;
            s.users.delete(wtxn, id)?;
            s.user_names.delete(wtxn, &user.name)?;
            if user.is_active_admin() {
                s.check_an_admin_remains(wtxn)?;
            }
            s.delete_sessions_where(wtxn, |session| session.user_id == id)
        })
    }

    fn check_an_admin_remains(&self, txn: &RoTxn) -> Result<(), Error> {
        let users: Vec<UserRecord> = all(&self.users, txn)?;
        match users.iter().any(UserRecord::is_active_admin) {
            true => Ok(()),
            false => Err(Error::conflict(
                "user",
                "at least one enabled administrator must remain",
            )),
        }
    }

    /// End the sessions `doomed` picks.
    pub fn end_sessions(&self, doomed: impl Fn(&SessionRecord) -> bool) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| s.delete_sessions_where(wtxn, doomed))
    }

    /// A user's sessions, most recently used first.
    pub fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, Error> {
        let rtxn = self.env.read_txn()?;
        let mut sessions: Vec<SessionRecord> = all::<SessionRecord>(&self.sessions, &rtxn)?
            .into_iter()
            .filter(|s| s.user_id == user_id)
            .collect();
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        Ok(sessions)
    }

    fn delete_sessions_where(
        &self,
        wtxn: &mut RwTxn,
        doomed: impl Fn(&SessionRecord) -> bool,
    ) -> Result<(), Error> {
        let mut keys = Vec::new();
        for entry in self.sessions.iter(wtxn)? {
            let (key, bytes) = entry?;
            let session: SessionRecord = serde_json::from_slice(bytes)
                .map_err(|e| Error::Store(format!("corrupt session: {e}")))?;
            if doomed(&session) {
                keys.push(key.to_string());
            }
        }
        for key in keys {
            self.sessions.delete(wtxn, &key)?;
        }
        Ok(())
    }

    /// Keep a new session under the hash of its token.
    pub fn create_session(&self, token: &str, session: &SessionRecord) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| put(&s.sessions, wtxn, &auth::hash_secret(token), session))
    }

    /// The session a token stands for, with its user, if both exist.
    pub fn session(&self, token: &str) -> Result<Option<(SessionRecord, UserRecord)>, Error> {
        let rtxn = self.env.read_txn()?;
        let Some(session) = get::<SessionRecord>(&self.sessions, &rtxn, &auth::hash_secret(token))?
        else {
            return Ok(None);
        };
        Ok(get::<UserRecord>(&self.users, &rtxn, &session.user_id)?.map(|user| (session, user)))
    }

    /// Change the session a token stands for, if it exists.
    pub fn update_session(
        &self,
        token: &str,
        change: impl FnOnce(&mut SessionRecord),
    ) -> Result<(), Error> {
        let key = auth::hash_secret(token);
        self.write_accounts(|s, wtxn| {
            if let Some(mut session) = get::<SessionRecord>(&s.sessions, wtxn, &key)? {
                change(&mut session);
                put(&s.sessions, wtxn, &key, &session)?;
            }
            Ok(())
        })
    }

    /// End the session a token stands for.
    pub fn delete_session(&self, token: &str) -> Result<(), Error> {
        self.write_accounts(|s, wtxn| {
            s.sessions.delete(wtxn, &auth::hash_secret(token))?;
            Ok(())
        })
    }
}
