//! The route table: one route per `google.api.http` binding (and additional binding) of every
//! method in the descriptor set, more literal templates first.

use http::Method;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

use crate::template::Template;

/// One HTTP binding of an RPC.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub verb: Method,
    /// The path template as written.
    pub pattern: String,
    /// It parsed.
    pub template: Template,
    /// `""` (no body), `"*"` (the whole input) or the input field the body is.
    pub body: String,
    /// The RPC.
    pub method: MethodDescriptor,
}

impl Route {
    /// `/package.Service/Method`.
    #[must_use]
    pub fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.method.parent_service().full_name(),
            self.method.name()
        )
    }
}

/// Every route.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// The routes of every method of `pool` with an HTTP rule.
    ///
    /// # Errors
    /// A template that does not parse, or a body naming no input field.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, String> {
        let Some(ext) = pool.get_extension_by_name("google.api.http") else {
            return Ok(Self::default());
        };
        let mut routes = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&ext) {
                    continue;
                }
                let rule = options.get_extension(&ext);
                let Value::Message(rule) = rule.as_ref() else {
                    continue;
                };
                let mut rules = vec![rule.clone()];
                if let Some(Value::List(more)) =
                    rule.get_field_by_name("additional_bindings").as_deref()
                {
                    rules.extend(more.iter().filter_map(|v| v.as_message().cloned()));
                }
                for r in rules {
                    if let Some(route) = binding(&method, &r)? {
                        routes.push(route);
                    }
                }
            }
        }
        // A literal segment beats a variable: `:undelete` and `/customers` before `{name}`.
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.literals()));
        Ok(Self { routes })
    }

    /// Every route.
    #[must_use]
    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// The route answering `verb path`, with its bound variables.
    #[must_use]
    pub fn find(&self, verb: &Method, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        self.routes
            .iter()
            .filter(|r| r.verb == verb)
            .find_map(|r| r.template.matches(path).map(|b| (r, b)))
    }

    /// Whether some route has `path` under another method.
    #[must_use]
    pub fn any_method(&self, path: &str) -> bool {
        self.routes
            .iter()
            .any(|r| r.template.matches(path).is_some())
    }
}

fn binding(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Option<Route>, String> {
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let verbs = [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ];
    let Some((verb, pattern)) = verbs
        .into_iter()
        .map(|(n, m)| (m, text(n)))
        .find(|(_, p)| !p.is_empty())
    else {
        return Ok(None);
    };
    let template = Template::parse(&pattern)
        .map_err(|e| format!("{}: bad template {}", method.full_name(), e.0))?;
    let body = text("body");
    if !body.is_empty() && body != "*" && method.input().get_field_by_name(&body).is_none() {
        return Err(format!(
            "{}: body {body} is no input field",
            method.full_name()
        ));
    }
    Ok(Some(Route {
        verb,
        pattern,
        template,
        body,
        method: method.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_suite_has_a_route_that_a_request_reaches() {
        let pool = crm_proto::json::pool().unwrap();
        let routes = Routes::from_pool(pool).unwrap();
        let methods: usize = pool
            .services()
            .filter(|s| s.full_name().starts_with("crm."))
            .map(|s| s.methods().len())
            .sum();
        assert!(
            routes.all().len() >= methods,
            "{} < {methods}",
            routes.all().len()
        );
        for r in routes.all() {
            let path = r.template.sample();
            let (found, _) = routes
                .find(&r.verb, &path)
                .unwrap_or_else(|| panic!("{} {path}: no route", r.verb));
            assert_eq!(
                found.method.full_name(),
                r.method.full_name(),
                "{} {path} ({}) is taken by {}",
                r.verb,
                r.pattern,
                found.pattern
            );
        }
    }
}
