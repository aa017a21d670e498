//! The record layer against rustls itself: a real client and server
//! handshake in memory, the server's secrets are handed to a
//! [`RecordLayer`], and the rustls client must read what it seals and
//! write what it opens, for every suite and version the gateway offers.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, ring as provider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConnection, ServerConnection, SupportedCipherSuite};

use super::*;
use crate::tls::PinnedCert;

fn suites() -> Vec<(SupportedCipherSuite, Version)> {
    use provider::cipher_suite::*;
    vec![
        (TLS13_AES_128_GCM_SHA256, Version::Tls13),
        (TLS13_AES_256_GCM_SHA384, Version::Tls13),
        (TLS13_CHACHA20_POLY1305_SHA256, Version::Tls13),
        (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, Version::Tls12),
        (TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, Version::Tls12),
        (TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, Version::Tls12),
    ]
}

/// Moves every byte one side has to send into the other, until neither
/// has anything to say.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) {
    loop {
        let mut moved = false;
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("client write_tls");
        }
        if !wire.is_empty() {
            moved = true;
            let mut slice = &wire[..];
            while !slice.is_empty() {
                server.read_tls(&mut slice).expect("server read_tls");
                server.process_new_packets().expect("server process");
            }
        }
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).expect("server write_tls");
        }
        if !wire.is_empty() {
            moved = true;
            feed_client(client, &wire);
        }
        if !moved {
            return;
        }
    }
}

fn feed_client(client: &mut ClientConnection, wire: &[u8]) {
    let mut slice = wire;
    while !slice.is_empty() {
        client.read_tls(&mut slice).expect("client read_tls");
        client.process_new_packets().expect("client process");
    }
}

/// A finished handshake on `suite`: the rustls client, and the server's
/// record layer made from its extracted secrets.
fn connected(suite: SupportedCipherSuite, version: Version) -> (ClientConnection, RecordLayer) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
    let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        ..provider::default_provider()
    });
    let versions: &[&rustls::SupportedProtocolVersion] = match version {
        Version::Tls12 => &[&rustls::version::TLS12],
        Version::Tls13 => &[&rustls::version::TLS13],
    };
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    server_config.enable_secret_extraction = true;
    let client_config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert::new(None, provider)))
        .with_no_client_auth();
    let mut client =
        ClientConnection::new(Arc::new(client_config), "localhost".try_into().expect("name")).expect("client");
    let mut server = ServerConnection::new(Arc::new(server_config)).expect("server");
    pump(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    assert_eq!(server.negotiated_cipher_suite(), Some(suite));
    let secrets = server.dangerous_extract_secrets().expect("secrets");
    let layer = RecordLayer::new(version, (secrets.rx.0, &secrets.rx.1), (secrets.tx.0, &secrets.tx.1))
        .expect("a suite the layer speaks");
    (client, layer)
}

/// Opens every record in `wire`, returning the data and whether a
/// close_notify came.
fn open_all(layer: &mut RecordLayer, mut wire: Vec<u8>) -> Result<(Vec<u8>, bool), RecordError> {
    let mut data = Vec::new();
    let mut closed = false;
    while !wire.is_empty() {
        let len = record_len(&wire)?.expect("a whole header");
        let mut record: Vec<u8> = wire.drain(..len).collect();
        match layer.open(&mut record)? {
            Opened::Data(n) => data.extend_from_slice(&record[..n]),
            Opened::Closed => closed = true,
        }
    }
    Ok((data, closed))
}

fn client_sends(client: &mut ClientConnection, data: &[u8]) -> Vec<u8> {
    client.writer().write_all(data).expect("client write");
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).expect("client write_tls");
    }
    wire
}

/// Feeds `wire` to the client a record at a time, reading what each
/// gives (rustls holds at most 16 KiB of plaintext unread).
fn client_reads(client: &mut ClientConnection, mut wire: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !wire.is_empty() {
        let len = record_len(wire).expect("header").expect("whole header");
        let (record, rest) = wire.split_at(len);
        feed_client(client, record);
        wire = rest;
        loop {
            match client.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }
    got
}

#[test]
fn every_offered_suite_round_trips_with_rustls_both_ways() {
    for (suite, version) in suites() {
        let (mut client, mut layer) = connected(suite, version);
        // Many records each way, so sequence numbers must advance alike;
        // and one longer than a record, so it is split.
        for i in 0..50u32 {
            let poll = format!("PING {i}\n");
            let wire = client_sends(&mut client, poll.as_bytes());
            assert_eq!(open_all(&mut layer, wire), Ok((poll.into_bytes(), false)), "{suite:?}");

            let push = format!("OPEN 1.2.{i}\n");
            let mut wire = Vec::new();
            layer.seal_data(push.as_bytes(), &mut wire).expect("seal");
            assert_eq!(client_reads(&mut client, &wire), push.as_bytes(), "{suite:?}");
        }
        let big: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = Vec::new();
        layer.seal_data(&big, &mut wire).expect("seal");
        assert_eq!(client_reads(&mut client, &wire), big, "{suite:?}");
        let wire = client_sends(&mut client, &big);
        assert_eq!(open_all(&mut layer, wire), Ok((big.clone(), false)), "{suite:?}");

        // close_notify both ways.
        client.send_close_notify();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("client write_tls");
        }
        assert_eq!(open_all(&mut layer, wire), Ok((Vec::new(), true)), "{suite:?}");
        let mut wire = Vec::new();
        layer.seal_close_notify(&mut wire).expect("seal");
        feed_client(&mut client, &wire);
        let mut buf = [0u8; 16];
        assert_eq!(client.reader().read(&mut buf).expect("clean end"), 0, "{suite:?}");
    }
}

#[test]
fn a_flipped_bit_a_replayed_record_or_a_cut_record_is_refused() {
    for (suite, version) in suites() {
        let (mut client, mut layer) = connected(suite, version);
        let wire = client_sends(&mut client, b"PING\n");
        for at in [3, 5, wire.len() / 2, wire.len() - 1] {
            let mut bad = wire.clone();
            bad[at] ^= 0x01;
            let len = bad.len();
            let refused = match record_len(&bad) {
                Ok(Some(l)) if l == len => layer.open(&mut bad).is_err(),
                _ => true,
            };
            assert!(refused, "{suite:?}: bit flipped at {at} was accepted");
        }
        // The genuine record still opens: failures did not advance the
        // sequence number.
        let mut good = wire.clone();
        assert_eq!(layer.open(&mut good), Ok(Opened::Data(5)), "{suite:?}");
        // The same record again is out of sequence.
        let mut replay = wire.clone();
        assert_eq!(layer.open(&mut replay), Err(RecordError::BadRecord), "{suite:?}");
        let mut cut = client_sends(&mut client, b"PING\n");
        cut.pop();
        assert!(
            matches!(layer.open(&mut cut), Err(RecordError::Malformed(_))),
            "{suite:?}"
        );
    }
}

#[test]
fn a_tls13_key_update_from_the_peer_is_refused() {
    let (suite, version) = suites()[0];
    let (mut client, mut layer) = connected(suite, version);
    client.refresh_traffic_keys().expect("key update");
    let wire = client_sends(&mut client, b"PING\n");
    assert_eq!(open_all(&mut layer, wire), Err(RecordError::Handshake));
}

#[test]
fn an_alert_other_than_close_notify_is_an_error_with_its_number() {
    // A fatal alert is what rustls sends when it refuses a record: flip a
    // bit in a record to the client and feed its alert back.
    for (suite, version) in suites() {
        let (mut client, mut layer) = connected(suite, version);
        let mut wire = Vec::new();
        layer.seal_data(b"OPEN 1\n", &mut wire).expect("seal");
        let last = wire.len() - 1;
        wire[last] ^= 0x80;
        let mut slice = &wire[..];
        client.read_tls(&mut slice).expect("read_tls");
        assert!(client.process_new_packets().is_err(), "{suite:?}");
        let mut alert = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut alert).expect("write_tls");
        }
        // bad_record_mac (20), fatal (2).
        assert_eq!(open_all(&mut layer, alert), Err(RecordError::Alert(2, 20)), "{suite:?}");
    }
}

#[test]
fn headers_no_peer_sends_are_refused_before_any_decryption() {
    assert_eq!(record_len(&[23, 3, 3, 0]), Ok(None));
    assert_eq!(record_len(&[23, 3, 3, 0, 16]), Ok(Some(21)));
    assert!(record_len(&[24, 3, 3, 0, 16]).is_err(), "unknown type");
    assert!(record_len(&[23, 2, 0, 0, 16]).is_err(), "SSL 2 version");
    assert!(record_len(&[23, 3, 3, 0, 15]).is_err(), "shorter than a tag");
    let too_long = (MAX_CIPHERTEXT + 1) as u16;
    let [hi, lo] = too_long.to_be_bytes();
    assert!(record_len(&[23, 3, 3, hi, lo]).is_err(), "longer than allowed");
    let [hi, lo] = (MAX_CIPHERTEXT as u16).to_be_bytes();
    assert_eq!(record_len(&[23, 3, 3, hi, lo]), Ok(Some(HEADER_LEN + MAX_CIPHERTEXT)));
}

#[test]
fn the_layer_never_shows_its_keys() {
    let (suite, version) = suites()[0];
    let (_client, layer) = connected(suite, version);
    let shown = format!("{layer:?}");
    assert!(shown.starts_with("RecordLayer { version: Tls13, rx_seq: "), "{shown}");
    assert!(!shown.contains("key"), "{shown}");
}
