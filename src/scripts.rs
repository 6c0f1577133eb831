//! Script bodies as Redis names them: the lower-case hex SHA1 of the body, the name
//! `EVALSHA` and `SCRIPT EXISTS` use.

/// The name Redis gives a script body.
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_bodies_as_redis_does() {
        // `redis-cli SCRIPT LOAD "return 1"`
        assert_eq!(
            super::sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
