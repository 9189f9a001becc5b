//! Topic names and filters: validation, wildcard matching and shared-subscription syntax.

/// Whether `filter` is a valid topic filter: non-empty, `#` only as the whole last level,
/// `+` only as a whole level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return false;
        }
        if level.contains('+') && level != "+" {
            return false;
        }
    }
    true
}

/// Whether `topic` is a valid topic name to publish to.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#'])
}

/// Whether `filter` matches `topic`. Wildcards at the first level do not match topics that
/// start with `$` (MQTT 4.7.2).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match t.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// A `$share/...` filter without a valid group name or filter.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidShare;

/// Splits `$share/{group}/{filter}` into the group and the filter; `Ok(None)` for an ordinary
/// filter, `Err` for a malformed shared one.
pub fn shared(filter: &str) -> Result<Option<(&str, &str)>, InvalidShare> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(None);
    };
    let (group, inner) = rest.split_once('/').ok_or(InvalidShare)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(InvalidShare);
    }
    Ok(Some((group, inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_the_specification_says() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("#", "a/b", true),
            ("+/+", "/x", true),
            ("+", "/x", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/b/", false),
            ("a/+/", "a/b/", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }

    #[test]
    fn filters_are_validated() {
        for ok in ["#", "a/#", "+/+", "a/+/c", "/", "a//b"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "a/b+"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert_eq!(shared("$share/g/a/+"), Ok(Some(("g", "a/+"))));
        assert_eq!(shared("a/b"), Ok(None));
        assert!(shared("$share/g").is_err());
        assert!(shared("$share//a").is_err());
    }
}
