//! Routing: method + path -> route, 404 or 405 (with the `Allow` value).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    Inference,
}

impl Route {
    pub const ALL: [Route; 3] = [Route::Health, Route::Metrics, Route::Inference];

    pub fn path(self) -> &'static str {
        match self {
            Route::Health => "/health",
            Route::Metrics => "/metrics",
            Route::Inference => "/inference",
        }
    }

    /// Methods the route accepts, as the `Allow` header value.
    pub fn allow(self) -> &'static str {
        match self {
            Route::Health | Route::Metrics => "GET, HEAD",
            Route::Inference => "POST",
        }
    }

    fn accepts(self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    Route(Route),
    NotFound,
    MethodNotAllowed { route: Route, allow: &'static str },
}

impl Dispatch {
    /// The matched route, if the path is known.
    pub fn route(self) -> Option<Route> {
        match self {
            Dispatch::Route(r) | Dispatch::MethodNotAllowed { route: r, .. } => Some(r),
            Dispatch::NotFound => None,
        }
    }
}

/// Matches exactly (no trailing-slash or case folding); the query string is ignored.
/// Methods are case-sensitive, as in HTTP.
pub fn dispatch(method: &str, path_with_query: &str) -> Dispatch {
    let path = path_with_query.split(['?', '#']).next().unwrap_or("");
    match Route::ALL.into_iter().find(|r| r.path() == path) {
        None => Dispatch::NotFound,
        Some(r) if r.accepts(method) => Dispatch::Route(r),
        Some(r) => Dispatch::MethodNotAllowed {
            route: r,
            allow: r.allow(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Dispatch::*;
        let cases = [
            ("GET", "/health", Route(super::Route::Health)),
            ("HEAD", "/health", Route(super::Route::Health)),
            ("GET", "/metrics?x=1", Route(super::Route::Metrics)),
            ("POST", "/inference", Route(super::Route::Inference)),
            (
                "get",
                "/health",
                MethodNotAllowed {
                    route: super::Route::Health,
                    allow: "GET, HEAD",
                },
            ),
            (
                "POST",
                "/health",
                MethodNotAllowed {
                    route: super::Route::Health,
                    allow: "GET, HEAD",
                },
            ),
            (
                "GET",
                "/inference",
                MethodNotAllowed {
                    route: super::Route::Inference,
                    allow: "POST",
                },
            ),
            (
                "OPTIONS",
                "/inference",
                MethodNotAllowed {
                    route: super::Route::Inference,
                    allow: "POST",
                },
            ),
            ("GET", "/Health", NotFound),
            ("GET", "", NotFound),
            ("GET", "/", NotFound),
            ("DELETE", "/missing", NotFound),
        ];
        for (m, p, want) in cases {
            assert_eq!(dispatch(m, p), want, "{m} {p}");
        }
    }
}
