//! A browser on Control's pages for tests: cookies, forms with their token, an admin logged in.

use crate::{Answer, Cluster, CookieJar};

/// A browser on Control's pages: a cookie jar and Control's address.
pub struct Browser {
    jar: CookieJar,
    base: String,
}

impl Browser {
    pub fn new(cluster: &Cluster, name: &str) -> Browser {
        Browser {
            jar: CookieJar::new(&cluster.dir, name),
            base: cluster.control_url(""),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.jar.request(&format!("{}{path}", self.base), &[])
    }

    /// A form POST; `origin` as a browser would send it (None: a request from a script).
    pub fn post(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let origin_header = origin.map(|o| format!("Origin: {o}"));
        let mut args = vec!["-X", "POST"];
        if let Some(header) = &origin_header {
            args.extend(["-H", header.as_str()]);
        }
        let encoded: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for field in &encoded {
            args.extend(["--data-urlencode", field.as_str()]);
        }
        self.jar.request(&format!("{}{path}", self.base), &args)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.jar.header(name)
    }
}

/// The form token in `page`.
pub fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form token");
    page[at + 19..].split('"').next().unwrap().to_string()
}

/// A browser logged in as a new administrator `root`.
pub fn log_in_admin(cluster: &Cluster) -> Browser {
    cluster.add_user("root", true, "the admin's password");
    let admin = Browser::new(cluster, "admin");
    let login = [("name", "root"), ("password", "the admin's password")];
    let origin = cluster.control_url("");
    assert_eq!(admin.post("/login", &login, Some(&origin)).status, 303);
    admin
}
