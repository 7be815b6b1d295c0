//! How errors are told to people: every distinct message of an error and its sources, joined,
//! so a cause that repeats its source's text is not said twice.

/// Every distinct message of an error and its sources, joined with `: `.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut cause = Some(error);
    while let Some(current) = cause {
        let text = current.to_string();
        if !messages.iter().any(|message| message.contains(&text)) {
            messages.push(text);
        }
        cause = current.source();
    }
    messages.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn repeated_messages_are_said_once() {
        let error = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&error), "cannot connect: refused");
        let plain = std::io::Error::other("plain");
        assert_eq!(error_chain(&plain), "plain");
    }
}
