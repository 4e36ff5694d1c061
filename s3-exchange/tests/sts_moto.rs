//! [`StsExchange`] against a real S3-compatible server with IAM enforced (moto server with
//! `INITIAL_NO_AUTH_ACTION_COUNT`): per-user roles confine the issued credentials to the user's
//! prefix. [`StaticExchange`] health checks against the same server and a dead port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use s3_exchange::{
    Exchange, ExchangeError, PolicyError, Secret, StaticConfig, StaticExchange, StsConfig,
    StsExchange,
};

use common::{grant_client, python, venv_bin};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto with IAM enforced after the 3 set-up calls that create the hub's admin user and key.
async fn moto() -> (Moto, String, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(venv_bin("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let moto = Moto { child, endpoint };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ep = moto.endpoint.clone();
    let out = tokio::task::spawn_blocking(move || {
        python(
            r#"
import json, os, boto3
iam = boto3.client("iam", endpoint_url=os.environ["EP"], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="stackhub-hub")
iam.put_user_policy(UserName="stackhub-hub", PolicyName="admin", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="stackhub-hub")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#,
            &[("EP", &ep)],
        )
    })
    .await
    .unwrap();
    let mut parts = out.split_whitespace();
    let id = parts.next().unwrap().to_owned();
    let secret = parts.next().unwrap().to_owned();
    (moto, id, secret)
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<(), String> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from_static(b"data"))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn sts_per_user_roles_confine_credentials_to_the_prefix() {
    let (moto, id, secret) = moto().await;
    let x = StsExchange::new(StsConfig {
        endpoint: moto.endpoint.clone(),
        sts_endpoint: None,
        region: "us-east-1".into(),
        bucket: "lumi-exchange".into(),
        access_key_id: id.clone(),
        secret_access_key: Secret::new(secret.clone()),
        role_arn: None,
        role_prefix: "stackhub-user-".into(),
        trusted_principal: None,
        duration_secs: 900,
    })
    .unwrap();
    x.check().await.unwrap();
    let alice = x.provision("alice").await.unwrap();
    let bob = x.provision("bob").await.unwrap();
    // Provisioning again (role exists already) works too.
    let alice2 = x.provision("alice").await.unwrap();
    assert_ne!(alice.credentials.access_key_id, id);
    assert!(alice.credentials.session_token.is_some());
    assert!(alice.credentials.expires_at.is_some());
    assert_eq!(alice.space.prefix, "users/alice/");

    let a = grant_client(&alice);
    put(&a, "lumi-exchange", "users/alice/result.nc")
        .await
        .unwrap();
    put(
        &grant_client(&alice2),
        "lumi-exchange",
        "users/alice/again.nc",
    )
    .await
    .unwrap();
    put(&grant_client(&bob), "lumi-exchange", "users/bob/own.nc")
        .await
        .unwrap();
    let got = a
        .get_object()
        .bucket("lumi-exchange")
        .key("users/alice/result.nc")
        .send()
        .await
        .unwrap();
    assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"data");
    let e = put(&a, "lumi-exchange", "users/bob/x.nc")
        .await
        .unwrap_err();
    assert!(e.contains("AccessDenied"), "{e}");
    let read_other = a
        .get_object()
        .bucket("lumi-exchange")
        .key("users/bob/own.nc")
        .send()
        .await;
    assert!(read_other.is_err());

    // Nothing secret in Debug output or error messages.
    let dbg = format!("{alice:?}");
    assert!(!dbg.contains(alice.credentials.secret_access_key.expose()));
    assert!(!dbg.contains(&secret));
    let bad = StsExchange::new(StsConfig {
        endpoint: moto.endpoint.clone(),
        sts_endpoint: None,
        region: "us-east-1".into(),
        bucket: "lumi-exchange".into(),
        access_key_id: id.clone(),
        secret_access_key: Secret::new("wrong-secret-value"),
        role_arn: None,
        role_prefix: "stackhub-user-".into(),
        trusted_principal: None,
        duration_secs: 900,
    })
    .unwrap();
    let e = bad.provision("carol").await.unwrap_err().to_string();
    assert!(!e.contains("wrong-secret-value"), "{e}");
    assert!(e.contains(&moto.endpoint), "{e}");
}

#[tokio::test]
async fn static_exchange_reports_reachability() {
    let (moto, id, secret) = moto().await;
    let x = StaticExchange::new(StaticConfig {
        endpoint: moto.endpoint.clone(),
        region: "us-east-1".into(),
        bucket: "missing-bucket".into(),
        access_key_id: id.clone(),
        secret_access_key: Secret::new(secret.clone()),
    });
    let e = x.check().await.unwrap_err();
    assert!(e.to_string().contains("missing-bucket"), "{e}");
    let g = x.provision("alice").await.unwrap();
    assert_eq!(g.kernel_env()["STACKHUB_S3_PREFIX"], "users/alice/");
    assert_eq!(g.kernel_env()["AWS_ACCESS_KEY_ID"], id);

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let x = StaticExchange::new(StaticConfig {
        endpoint: format!("http://127.0.0.1:{dead}"),
        region: "us-east-1".into(),
        bucket: "b".into(),
        access_key_id: id,
        secret_access_key: Secret::new(secret.clone()),
    });
    match x.check().await {
        Err(ExchangeError::Unreachable { endpoint, reason }) => {
            assert!(endpoint.contains(&dead.to_string()));
            assert!(!reason.contains(&secret), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// Per-user roles on the moto server, with the hub's key.
fn per_user_roles(moto: &Moto, id: &str, secret: &str) -> StsExchange {
    StsExchange::new(StsConfig {
        endpoint: moto.endpoint.clone(),
        sts_endpoint: None,
        region: "us-east-1".into(),
        bucket: "lumi-exchange".into(),
        access_key_id: id.to_owned(),
        secret_access_key: Secret::new(secret),
        role_arn: None,
        role_prefix: "stackhub-user-".into(),
        trusted_principal: None,
        duration_secs: 900,
    })
    .unwrap()
}

/// Mallory: another IAM user of the account, allowed `sts:AssumeRole` and S3 on anything (as a
/// service account of another project could be). She tries to assume alice's role and bob's
/// (made by an older hub, trusting `*`, then provisioned again), then read their objects.
const MALLORY: &str = r#"
import json, os, boto3, botocore
ep = os.environ["EP"]
admin = dict(endpoint_url=ep, region_name="us-east-1",
             aws_access_key_id=os.environ["ID"], aws_secret_access_key=os.environ["SECRET"])
iam = boto3.client("iam", **admin)
iam.create_user(UserName="mallory")
iam.put_user_policy(UserName="mallory", PolicyName="assume-anything", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["sts:AssumeRole"], "Resource": "*"}]}))
k = iam.create_access_key(UserName="mallory")["AccessKey"]
sts = boto3.client("sts", endpoint_url=ep, region_name="us-east-1",
                   aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"])
out = {}
for user in ["alice", "bob"]:
    arn = iam.get_role(RoleName="stackhub-user-" + user)["Role"]["Arn"]
    try:
        c = sts.assume_role(RoleArn=arn, RoleSessionName="mallory")["Credentials"]
    except botocore.exceptions.ClientError as e:
        out[user] = e.response["Error"]["Code"]
        continue
    s3 = boto3.client("s3", endpoint_url=ep, region_name="us-east-1",
                      aws_access_key_id=c["AccessKeyId"], aws_secret_access_key=c["SecretAccessKey"],
                      aws_session_token=c["SessionToken"])
    try:
        body = s3.get_object(Bucket="lumi-exchange", Key="users/%s/private.nc" % user)["Body"].read()
        out[user] = "read: " + body.decode()
    except botocore.exceptions.ClientError as e:
        out[user] = "assumed; read " + e.response["Error"]["Code"]
print(json.dumps(out))
"#;

/// An older hub's role for bob, trusting every principal.
const OLD_ROLE: &str = r#"
import json, os, boto3
iam = boto3.client("iam", endpoint_url=os.environ["EP"], region_name="us-east-1",
                   aws_access_key_id=os.environ["ID"], aws_secret_access_key=os.environ["SECRET"])
iam.create_role(RoleName="stackhub-user-bob", AssumeRolePolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}))
"#;

#[tokio::test]
async fn another_principal_cannot_assume_a_users_role() {
    let (moto, id, secret) = moto().await;
    let env = [
        ("EP", moto.endpoint.as_str()),
        ("ID", id.as_str()),
        ("SECRET", secret.as_str()),
    ];
    let owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let py = |script: &'static str| {
        let owned = owned.clone();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = owned
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            python(script, &env)
        })
    };
    py(OLD_ROLE).await.unwrap();
    let x = per_user_roles(&moto, &id, &secret);
    for user in ["alice", "bob"] {
        let g = x.provision(user).await.unwrap();
        put(
            &grant_client(&g),
            "lumi-exchange",
            &format!("users/{user}/private.nc"),
        )
        .await
        .unwrap();
    }
    let out = py(MALLORY).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["alice"], "AccessDenied", "mallory took alice's role: {v}");
    assert_eq!(
        v["bob"], "AccessDenied",
        "mallory took bob's older role: {v}"
    );
    // The hub itself still assumes both.
    for user in ["alice", "bob"] {
        let g = x.provision(user).await.unwrap();
        grant_client(&g)
            .get_object()
            .bucket("lumi-exchange")
            .key(format!("users/{user}/private.nc"))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_configured_trusted_principal_must_be_one_arn() {
    for bad in ["*", "arn:aws:iam::*:root", "stackhub-hub"] {
        let e = StsExchange::new(StsConfig {
            endpoint: "http://127.0.0.1:9".into(),
            sts_endpoint: None,
            region: "us-east-1".into(),
            bucket: "b".into(),
            access_key_id: "k".into(),
            secret_access_key: Secret::new("s"),
            role_arn: None,
            role_prefix: "stackhub-user-".into(),
            trusted_principal: Some(bad.into()),
            duration_secs: 900,
        })
        .unwrap_err();
        assert!(
            matches!(e, ExchangeError::Config(ref m) if m.contains(bad)),
            "{bad}: {e}"
        );
    }
}

#[tokio::test]
async fn user_named_with_a_wildcard_cannot_read_another_users_space() {
    let (moto, id, secret) = moto().await;
    let x = per_user_roles(&moto, &id, &secret);
    let ab = x.provision("ab").await.unwrap();
    put(&grant_client(&ab), "lumi-exchange", "users/ab/private.nc")
        .await
        .unwrap();
    for (attacker, character) in [("a*", '*'), ("a?", '?'), ("${aws:username}", '$')] {
        let got = x.provision(attacker).await;
        if let Ok(g) = &got {
            let read = grant_client(g)
                .get_object()
                .bucket("lumi-exchange")
                .key("users/ab/private.nc")
                .send()
                .await;
            assert!(read.is_err(), "user {attacker:?} read users/ab/");
        }
        match got {
            Err(ExchangeError::Policy(PolicyError::Wildcard {
                what, character: c, ..
            })) => {
                assert_eq!((what, c), ("prefix", character), "{attacker}");
            }
            other => panic!("{attacker}: expected a wildcard refusal, got {other:?}"),
        }
    }
}

/// A fixed role (`role_arn`) made by an operator with `Principal: "*"`.
const FIXED_ROLES: &str = r#"
import json, os, boto3
iam = boto3.client("iam", endpoint_url=os.environ["EP"], region_name="us-east-1",
                   aws_access_key_id=os.environ["ID"], aws_secret_access_key=os.environ["SECRET"])
hub = iam.get_user(UserName="stackhub-hub")["User"]["Arn"]
def role(name, principal):
    return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
print(role("open-to-all", "*"), role("hub-only", hub))
"#;

#[tokio::test]
async fn a_fixed_role_any_principal_may_assume_is_refused() {
    let (moto, id, secret) = moto().await;
    let (ep, id2, secret2) = (moto.endpoint.clone(), id.clone(), secret.clone());
    let out = tokio::task::spawn_blocking(move || {
        python(
            FIXED_ROLES,
            &[("EP", &ep), ("ID", &id2), ("SECRET", &secret2)],
        )
    })
    .await
    .unwrap();
    let mut arns = out.split_whitespace();
    let (open, hub_only) = (arns.next().unwrap(), arns.next().unwrap());
    let fixed = |role_arn: &str| {
        StsExchange::new(StsConfig {
            endpoint: moto.endpoint.clone(),
            sts_endpoint: None,
            region: "us-east-1".into(),
            bucket: "lumi-exchange".into(),
            access_key_id: id.clone(),
            secret_access_key: Secret::new(secret.clone()),
            role_arn: Some(role_arn.to_owned()),
            role_prefix: "stackhub-user-".into(),
            trusted_principal: None,
            duration_secs: 900,
        })
        .unwrap()
    };
    match fixed(open).check().await {
        Err(ExchangeError::Config(m)) => assert!(m.contains("trusts every principal"), "{m}"),
        other => panic!("a role open to all passed the site check: {other:?}"),
    }
    fixed(hub_only).check().await.unwrap();
}
