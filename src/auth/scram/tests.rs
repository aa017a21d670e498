use std::num::NonZeroU32;

use super::*;

/// argon2's smallest parameters, so debug test builds stay fast; the
/// real ones run in tests/operators_cli.rs through the binary.
const TINY: Argon2Params = Argon2Params { m_kib: 8, t: 1, p: 1 };

/// A policy that lets [`TINY`] through, for the client in these tests.
const TINY_POLICY: ParamPolicy = ParamPolicy {
    min: TINY,
    max: ParamPolicy::STRONG.max,
};

const SALT: [u8; 16] = *b"sixteen byte slt";
const EXPORTER: [u8; 32] = [7; 32];

fn verifier(password: &str) -> Verifier {
    Verifier::derive(password.as_bytes(), &SALT, &TINY).expect("tiny params are valid")
}

/// One whole exchange: the client signs in as `user` with `password`
/// against `stored` (the gateway's verifier for that name), each side with
/// its own binding. The outcome at the gateway, and the client's check of
/// the server-final when the gateway accepted.
fn exchange(
    user: &str,
    password: &str,
    stored: Verifier,
    client_binding: ChannelBinding,
    server_binding: ChannelBinding,
) -> Result<ServerSuccess, ScramError> {
    let (client, first) = Client::start(user, &[1; NONCE_BYTES], client_binding)?;
    let parsed = ClientFirst::parse(&first)?;
    assert_eq!(parsed.user(), user);
    let (server, server_first) = ServerExchange::start(parsed, stored, server_binding, &[2; NONCE_BYTES])?;
    let challenge = client.receive(&server_first, &TINY_POLICY)?;
    let (client, client_final) = challenge.respond(password.as_bytes())?;
    let success = server.finish(&client_final)?;
    client.verify(&success.server_final)?;
    Ok(success)
}

/// alice's client and the gateway over plain HTTP after client-first and
/// server-first, the nonces made of bytes `client` and `server`, the
/// gateway holding `stored`: (client, gateway, server-first).
fn begin(stored: Verifier, client: u8, server: u8) -> (Client, ServerExchange, String) {
    let (alice, first) = Client::start("alice", &[client; NONCE_BYTES], ChannelBinding::None).expect("start");
    let parsed = ClientFirst::parse(&first).expect("parse");
    let (gateway, server_first) =
        ServerExchange::start(parsed, stored, ChannelBinding::None, &[server; NONCE_BYTES]).expect("start");
    (alice, gateway, server_first)
}

#[test]
fn a_full_exchange_succeeds_plain_and_bound_to_tls() {
    for binding in [ChannelBinding::None, ChannelBinding::TlsExporter(EXPORTER)] {
        let done = exchange("alice", "correct horse", verifier("correct horse"), binding, binding)
            .unwrap_or_else(|e| panic!("{binding:?}: {e}"));
        assert_eq!(done.user, "alice");
        assert!(done.server_final.starts_with("v=") && done.server_final.len() == 46);
    }
}

#[test]
fn the_messages_are_exactly_the_documented_grammar() {
    let (_, first) = Client::start("alice", &[1; NONCE_BYTES], ChannelBinding::None).expect("start");
    assert_eq!(first, "n,,n=alice,r=AQEBAQEBAQEBAQEBAQEBAQEB");
    let (client, _, server_first) = begin(verifier("pw"), 1, 2);
    assert_eq!(
        server_first,
        "r=AQEBAQEBAQEBAQEBAQEBAQEBAgICAgICAgICAgICAgICAgIC,s=c2l4dGVlbiBieXRlIHNsdA==,m=8,t=1,p=1"
    );
    let (_, client_final) = client
        .receive(&server_first, &TINY_POLICY)
        .expect("receive")
        .respond(b"pw")
        .expect("respond");
    // c=biws is base64("n,,"), as in RFC 5802's example.
    assert!(
        client_final.starts_with("c=biws,r=AQEBAQEBAQEBAQEBAQEBAQEBAgICAgICAgICAgICAgICAgIC,p="),
        "{client_final}"
    );
}

#[test]
fn a_wrong_password_fails_at_the_gateway() {
    assert_eq!(
        exchange(
            "alice",
            "wrong horse",
            verifier("correct horse"),
            ChannelBinding::None,
            ChannelBinding::None
        ),
        Err(ScramError::InvalidProof)
    );
    assert_eq!(ScramError::InvalidProof.wire_value(), "invalid-proof");
}

#[test]
fn an_unknown_user_gets_a_stable_mock_and_fails_like_a_wrong_password() {
    let mocks = MockVerifiers::new(b"the gateway's ticket key");
    let mock = mocks.verifier_for("mallory");
    // Stable for a name across instances (restarts), different per name.
    assert_eq!(
        MockVerifiers::new(b"the gateway's ticket key").verifier_for("mallory"),
        mock
    );
    assert_ne!(mocks.verifier_for("eve").salt(), mock.salt());
    assert_eq!(mock.params(), Argon2Params::DEFAULT);
    assert_eq!(mock.salt().len(), SALT_BYTES);
    // A mock at TINY cost, so the client's argon2 stays quick; any password fails.
    let tiny_mock = Verifier { params: TINY, ..mock };
    for password in ["", "password", "correct horse"] {
        assert_eq!(
            exchange(
                "mallory",
                password,
                tiny_mock.clone(),
                ChannelBinding::None,
                ChannelBinding::None
            ),
            Err(ScramError::InvalidProof)
        );
    }
}

/// What a thief with the config file holds: salt, parameters, StoredKey
/// and ServerKey. Every obvious way to turn them into a client proof
/// fails; only the password's argon2 gives ClientKey.
#[test]
fn a_stolen_verifier_cannot_make_a_client_proof() {
    let real = verifier("correct horse");
    let stolen = real.clone();
    let text = stolen.to_text();

    // The verifier's own text, or its keys as text, as the password.
    for guess in [
        text.clone(),
        BASE64_NOPAD.encode(&stolen.stored_key),
        BASE64_NOPAD.encode(&stolen.server_key),
    ] {
        assert_eq!(
            exchange(
                "alice",
                &guess,
                real.clone(),
                ChannelBinding::None,
                ChannelBinding::None
            ),
            Err(ScramError::InvalidProof),
            "{guess}"
        );
    }

    // The keys themselves in SaltedPassword's place.
    for salted in [stolen.stored_key, stolen.server_key] {
        let (client, server, server_first) = begin(real.clone(), 3, 4);
        let (_, client_final) = client
            .receive(&server_first, &TINY_POLICY)
            .expect("receive")
            .respond_salted(&salted);
        assert_eq!(server.finish(&client_final), Err(ScramError::InvalidProof));
    }

    // Hand-made proofs from StoredKey: StoredKey as ClientKey, a zero
    // ClientKey (the proof is then ClientSignature itself), ServerKey as
    // ClientKey.
    for client_key in [stolen.stored_key, [0u8; 32], stolen.server_key] {
        let (client, server, server_first) = begin(real.clone(), 5, 6);
        let challenge = client.receive(&server_first, &TINY_POLICY).expect("receive");
        let without_proof = format!("c=biws,r={}", challenge.nonce);
        let auth = format!("{},{without_proof}", challenge.auth_prefix);
        let signature = hmac256(&stolen.stored_key, auth.as_bytes());
        let proof = xor(&client_key, &signature);
        let forged = format!("{without_proof},p={}", BASE64.encode(&proof));
        assert_eq!(server.finish(&forged), Err(ScramError::InvalidProof));
    }
}

#[test]
fn a_replayed_client_final_fails_on_a_new_exchange() {
    // A captured client-final is bound to that exchange's server nonce:
    // the same client-first answered again gets another.
    let (client, server, server_first) = begin(verifier("pw"), 1, 2);
    let (_, client_final) = client
        .receive(&server_first, &TINY_POLICY)
        .expect("receive")
        .respond(b"pw")
        .expect("respond");
    assert!(server.finish(&client_final).is_ok());
    let (_, again, _) = begin(verifier("pw"), 1, 9);
    assert_eq!(again.finish(&client_final), Err(ScramError::NonceMismatch));
}

#[test]
fn tampered_nonces_fail() {
    let (client, server, server_first) = begin(verifier("pw"), 1, 2);

    // The gateway's answer must extend the client's nonce, by a bounded part.
    let cases = [
        (server_first.replacen("r=AQEB", "r=AQEC", 1), ScramError::NonceMismatch),
        (
            server_first.replacen("AgICAgICAgICAgICAgICAgIC", "AgIC", 1),
            ScramError::Malformed(Part::Nonce),
        ),
        (
            server_first.replacen("AgICAgICAgICAgICAgICAgIC", &"A".repeat(65), 1),
            ScramError::Malformed(Part::Nonce),
        ),
    ];
    for (tampered, want) in cases {
        assert_eq!(
            client.clone().receive(&tampered, &TINY_POLICY).map(|_| ()),
            Err(want),
            "{tampered}"
        );
    }

    // The client's final must carry the combined nonce exactly; the
    // proof is computed over the tampered one so only the nonce differs.
    let challenge = client.receive(&server_first, &TINY_POLICY).expect("receive");
    let (_, client_final) = challenge.respond(b"pw").expect("respond");
    let tampered = client_final.replacen("AgICAgIC", "AgICAgID", 1);
    assert_eq!(server.finish(&tampered), Err(ScramError::NonceMismatch));
}

#[test]
fn channel_bindings_must_match_the_connection() {
    let other = ChannelBinding::TlsExporter([8; 32]);
    let tls = ChannelBinding::TlsExporter(EXPORTER);
    for (client, server, want) in [
        // A man in the middle: two TLS connections, two exporters.
        (other, tls, ScramError::ChannelBinding),
        // No binding over TLS: refused before the client hashes.
        (ChannelBinding::None, tls, ScramError::ChannelBinding),
        // A binding the plain connection cannot check.
        (tls, ChannelBinding::None, ScramError::ChannelBinding),
    ] {
        assert_eq!(
            exchange("alice", "pw", verifier("pw"), client, server),
            Err(want),
            "{client:?} / {server:?}"
        );
    }
    // A binding type we do not know, and `y` (a client that could bind)
    // over TLS, which is a downgrade.
    assert_eq!(
        ClientFirst::parse("p=tls-unique,,n=alice,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB"),
        Err(ScramError::ChannelBinding)
    );
    let y = ClientFirst::parse("y,,n=alice,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB").expect("y parses");
    assert_eq!(
        ServerExchange::start(y.clone(), verifier("pw"), tls, &[2; NONCE_BYTES]).map(|_| ()),
        Err(ScramError::ChannelBinding)
    );
    assert!(ServerExchange::start(y, verifier("pw"), ChannelBinding::None, &[2; NONCE_BYTES]).is_ok());
    assert_eq!(ScramError::ChannelBinding.wire_value(), "channel-bindings-dont-match");
}

#[test]
fn the_client_checks_the_gateways_signature() {
    let (client, server, server_first) = begin(verifier("pw"), 1, 2);
    let (waiting, client_final) = client
        .receive(&server_first, &TINY_POLICY)
        .expect("receive")
        .respond(b"pw")
        .expect("respond");
    let good = server.finish(&client_final).expect("the right password");
    let forged = format!("v={}", BASE64.encode(&[0u8; 32]));
    for (answer, want) in [
        // A gateway without alice's verifier cannot make the signature.
        (forged.as_str(), Err(ScramError::BadServerSignature)),
        ("e=invalid-proof", Err(ScramError::Refused("invalid-proof".into()))),
        ("e=Invalid Proof!", Err(ScramError::Malformed(Part::ServerFinal))),
        ("e=", Err(ScramError::Malformed(Part::ServerFinal))),
        ("v=AAAA", Err(ScramError::Malformed(Part::ServerFinal))),
        ("x=1", Err(ScramError::Malformed(Part::ServerFinal))),
        (good.server_final.as_str(), Ok(())),
    ] {
        assert_eq!(waiting.clone().verify(answer).map(|_| ()), want, "{answer}");
    }
}

#[test]
fn weak_or_huge_parameters_from_a_gateway_are_refused_before_hashing() {
    let (client, _) = Client::start("alice", &[1; NONCE_BYTES], ChannelBinding::None).expect("start");
    let with = |params: &str| {
        format!("r=AQEBAQEBAQEBAQEBAQEBAQEBAQEBAgICAgICAgICAgICAgICAgIC,s=c2l4dGVlbiBieXRlIHNsdA==,{params}")
    };
    for (params, want) in [
        ("m=8,t=1,p=1", Err(ScramError::Params)),
        ("m=19455,t=2,p=1", Err(ScramError::Params)),
        ("m=65536,t=1,p=1", Err(ScramError::Params)),
        ("m=1048577,t=3,p=1", Err(ScramError::Params)),
        ("m=65536,t=11,p=1", Err(ScramError::Params)),
        ("m=65536,t=3,p=17", Err(ScramError::Params)),
        ("m=65536,t=3,p=0", Err(ScramError::Params)),
        ("m=065536,t=3,p=1", Err(ScramError::Malformed(Part::Params))),
        ("m=99999999999,t=3,p=1", Err(ScramError::Malformed(Part::Params))),
        ("m=+65536,t=3,p=1", Err(ScramError::Malformed(Part::Params))),
        ("t=3,m=65536,p=1", Err(ScramError::Malformed(Part::Params))),
        (
            "m=19456,t=2,p=1",
            Ok(Argon2Params {
                m_kib: 19_456,
                t: 2,
                p: 1,
            }),
        ),
        ("m=65536,t=3,p=1", Ok(Argon2Params::DEFAULT)),
    ] {
        assert_eq!(
            client
                .clone()
                .receive(&with(params), &ParamPolicy::STRONG)
                .map(|c| c.params()),
            want,
            "{params}"
        );
    }
}

#[test]
fn malformed_messages_give_typed_errors() {
    for (msg, want) in [
        ("", ScramError::Malformed(Part::Gs2Header)),
        ("n,,", ScramError::Malformed(Part::Message)),
        (
            "n,a=bob,n=alice,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB",
            ScramError::Malformed(Part::Gs2Header),
        ),
        (
            "x,,n=alice,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB",
            ScramError::Malformed(Part::Gs2Header),
        ),
        (
            "n,,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB,n=alice",
            ScramError::Malformed(Part::Message),
        ),
        (
            "n,,n=alice,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB,x=1",
            ScramError::Malformed(Part::Message),
        ),
        ("n,,n=alice,r=short", ScramError::Malformed(Part::Nonce)),
        ("n,,n=al=2Cice,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB", ScramError::BadUser),
        ("n,,n=,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB", ScramError::BadUser),
        ("n,,n=-alice,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB", ScramError::BadUser),
        (
            "n,,n=alicé,r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB",
            ScramError::Malformed(Part::Message),
        ),
        (
            "n,,n=alice,r=AQEBAQEB\tAQEBAQEBAQEBAQEBAQEB",
            ScramError::Malformed(Part::Message),
        ),
        (
            "n,,n=alice,r=AQEBAQEB AQEBAQEBAQEBAQEBAQEB",
            ScramError::Malformed(Part::Nonce),
        ),
    ] {
        assert_eq!(ClientFirst::parse(msg), Err(want), "{msg:?}");
    }
    let huge_user = format!("n,,n={},r=AQEBAQEBAQEBAQEBAQEBAQEBAQEB", "a".repeat(65));
    assert_eq!(ClientFirst::parse(&huge_user), Err(ScramError::BadUser));
    let huge = format!("n,,n=alice,r={}", "A".repeat(MAX_MESSAGE_BYTES));
    assert_eq!(ClientFirst::parse(&huge), Err(ScramError::TooLong));

    let (client, server, server_first) = begin(verifier("pw"), 1, 2);
    let (_, good) = client
        .receive(&server_first, &TINY_POLICY)
        .expect("receive")
        .respond(b"pw")
        .expect("respond");
    let r = good.split(',').nth(1).expect("r=");
    for (msg, want) in [
        (String::new(), ScramError::Malformed(Part::Message)),
        (format!("c=biws,{r}"), ScramError::Malformed(Part::Message)),
        (format!("c=biws,{r},p=AAAA"), ScramError::Malformed(Part::Proof)),
        (format!("c=biws,{r},p=!!!!"), ScramError::Malformed(Part::Proof)),
        (
            format!("c=b!ws,{r},p={}", BASE64.encode(&[0; 32])),
            ScramError::Malformed(Part::Binding),
        ),
        (
            format!("c=eSws,{r},p={}", BASE64.encode(&[0; 32])),
            ScramError::ChannelBinding,
        ),
        (
            format!("{r},c=biws,p={}", BASE64.encode(&[0; 32])),
            ScramError::Malformed(Part::Message),
        ),
        (
            format!("c=biws,{r},p={},x=1", BASE64.encode(&[0; 32])),
            ScramError::Malformed(Part::Message),
        ),
        (format!("{good}{}", "A".repeat(MAX_MESSAGE_BYTES)), ScramError::TooLong),
    ] {
        let (_, server, _) = begin(verifier("pw"), 1, 2);
        assert_eq!(server.finish(&msg), Err(want), "{msg:?}");
    }
    assert!(server.finish(&good).is_ok());
}

#[test]
fn the_verifier_text_round_trips_and_is_parsed_strictly() {
    // Keys as a derivation would give them; the text form does not care.
    let v = Verifier {
        salt: SALT.to_vec(),
        params: Argon2Params::DEFAULT,
        stored_key: [1; 32],
        server_key: [2; 32],
    };
    let text = v.to_text();
    assert!(
        text.starts_with("$scram-argon2id$v=19$m=65536,t=3,p=1$c2l4dGVlbiBieXRlIHNsdA$"),
        "{text}"
    );
    assert_eq!(Verifier::parse(&text), Ok(v.clone()));
    let [_, _, _, _, _, stored, server] = text.split('$').collect::<Vec<_>>()[..] else {
        panic!("seven fields in {text}")
    };
    let with = |params: &str, salt: &str, stored: &str, server: &str| {
        format!("$scram-argon2id$v=19${params}${salt}${stored}${server}")
    };
    let salt = "c2l4dGVlbiBieXRlIHNsdA";
    let ok = "m=65536,t=3,p=1";
    for (bad, want) in [
        (text.replace("argon2id", "argon2i"), VerifierError::Format),
        (text.replace("v=19", "v=16"), VerifierError::Format),
        (format!("{text}$extra"), VerifierError::Format),
        (with(ok, salt, stored, ""), VerifierError::Key),
        (with("m=65536,t=3", salt, stored, server), VerifierError::ParamsFormat),
        (
            with("m=65536,p=1,t=3", salt, stored, server),
            VerifierError::ParamsFormat,
        ),
        (
            with("m=65536,t=03,p=1", salt, stored, server),
            VerifierError::ParamsFormat,
        ),
        (with("m=8,t=1,p=1", salt, stored, server), VerifierError::Weak),
        (with(ok, "c2l4dGVlbiBieXRl", stored, server), VerifierError::Salt),
        (
            with(ok, "c2l4dGVlbiBieXRlIHNsdA==", stored, server),
            VerifierError::Salt,
        ),
        (with(ok, salt, &stored[..42], server), VerifierError::Key),
        (with(ok, salt, stored, &format!("{server}A")), VerifierError::Key),
        ("x".repeat(MAX_VERIFIER_CHARS + 1), VerifierError::TooLong),
        (String::new(), VerifierError::Format),
    ] {
        assert_eq!(Verifier::parse(&bad), Err(want), "{bad:?}");
    }
}

#[test]
fn verifiers_hide_their_keys_from_debug() {
    let v = verifier("pw");
    let shown = format!("{v:?}");
    assert_eq!(shown, "Verifier(Argon2Params { m_kib: 8, t: 1, p: 1 }, keys hidden)");
    assert!(!shown.contains(&BASE64_NOPAD.encode(&v.stored_key)));
}

/// RFC 7677's SCRAM-SHA-256 example, with its PBKDF2 SaltedPassword put
/// where argon2's goes: the key schedule, AuthMessage and the gateway's
/// parsing of the client-final are the RFC's byte for byte.
#[test]
fn rfc_7677_example_through_the_gateways_side() {
    let salt = BASE64.decode(b"W22ZaJ0SNY7soEsUEjb6gQ==").expect("RFC salt");
    let mut salted = [0u8; 32];
    let iterations = NonZeroU32::new(4096).expect("non-zero");
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        b"pencil",
        &mut salted,
    );
    let (_, stored_key, server_key) = keys(&salted);
    let server = ServerExchange {
        first: ClientFirst::parse("n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("RFC client-first"),
        verifier: Verifier {
            salt,
            params: TINY,
            stored_key,
            server_key,
        },
        binding: ChannelBinding::None,
        server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".into(),
        nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
    };
    let done = server
        .finish("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .expect("the RFC's proof");
    assert_eq!(done.server_final, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/// What a ticket's holder proves with: both sides compute it, nothing on
/// the wire is it or keys it.
#[test]
fn both_sides_derive_the_same_possession_key_and_the_wire_does_not_show_it() {
    let stored = verifier("pw");
    let (client, server, server_first) = begin(stored.clone(), 1, 2);
    let (_, first) = Client::start("alice", &[1; NONCE_BYTES], ChannelBinding::None).expect("start");
    let (waiting, client_final) = client
        .receive(&server_first, &TINY_POLICY)
        .expect("receive")
        .respond(b"pw")
        .expect("respond");
    let done = server.finish(&client_final).expect("the right password");
    let signed_in = waiting.verify(&done.server_final).expect("the gateway's signature");
    let ticket = "rwt1.payload.tag";
    let key = signed_in.possession_key(ticket);
    assert_eq!(key, stored.possession_key(ticket));
    assert_ne!(key, stored.possession_key("rwt1.another.ticket"));
    for seen in [&first, &server_first, &client_final, &done.server_final, ticket] {
        assert_ne!(
            key,
            hmac256(seen.as_bytes(), &[POSSESSION_LABEL, ticket.as_bytes()].concat())
        );
        assert!(!seen.contains(&BASE64.encode(&key)));
    }
    assert_eq!(format!("{signed_in:?}"), "SignedIn(key hidden)");
}

#[test]
fn operator_names_follow_one_rule() {
    for good in [
        "alice",
        "a",
        "Bob.Smith",
        "ops_1",
        "j@example.com",
        "x-y",
        &"a".repeat(64),
    ] {
        assert!(valid_user(good), "{good:?}");
    }
    for bad in [
        "",
        "-alice",
        ".alice",
        "al ice",
        "al,ice",
        "al=ice",
        "alicé",
        &"a".repeat(65),
        "a\n",
    ] {
        assert!(!valid_user(bad), "{bad:?}");
    }
}

proptest::proptest! {
    /// Hostile input at every step: never a panic, always a typed error
    /// or a value.
    #[test]
    fn any_message_at_any_step_is_handled(msg in "(\\PC|,|=){0,200}", bytes in proptest::collection::vec(0u8..=255, 0..64)) {
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        for m in [&msg, &raw] {
            let _ = ClientFirst::parse(m);
            let (client, server, _) = begin(verifier("pw"), 1, 2);
            let _ = client.receive(m, &TINY_POLICY);
            let _ = server.finish(m);
            let _ = Verifier::parse(m);
            let waiting = ClientFinal { expected: [0; 32], stored_key: [0; 32] };
            let _ = waiting.verify(m);
        }
    }
}
