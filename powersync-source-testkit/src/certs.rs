//! Test certificates made with the `openssl` command line tool, for the connectors' TLS tests
//! against real servers.

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) -> bool {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => panic!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => false,
    }
}

/// Writes into `dir`, each as `name.crt` and `name.key` (PEM, P-256 keys, valid two days):
/// `ca` (a CA), `server` (signed by `ca`, for `localhost` and `127.0.0.1`), `wrongname`
/// (signed by `ca`, for `elsewhere.example` only), `self` (self-signed, CA:TRUE, for
/// `localhost` and `127.0.0.1`), `other-ca` (an unrelated CA) and `client` (signed by `ca`,
/// a client certificate for the user `u_cert`). `None` when the openssl CLI is missing;
/// panics when openssl fails.
pub fn make(dir: &Path) -> Option<()> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let run = |args: Vec<&str>| openssl(dir, &args);
    let req_x509 = |key: &str, crt: &str, subj: &str, extra: &[&str]| {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend(["-keyout", key, "-out", crt, "-days", "2", "-subj", subj]);
        a.extend(extra);
        run(a)
    };
    if !req_x509("ca.key", "ca.crt", "/CN=powersync test CA", &[]) {
        return None;
    }
    req_x509("other-ca.key", "other-ca.crt", "/CN=other CA", &[]);
    req_x509(
        "self.key",
        "self.crt",
        "/CN=localhost",
        &["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
    );
    let leaf = |name: &str, subj: &str, ext: &str| {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let extfile = format!("{name}.ext");
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let mut a = vec!["req"];
        a.extend(ec);
        a.extend(["-keyout", &key, "-out", &csr, "-subj", subj]);
        run(a);
        run(vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &extfile,
        ]);
    };
    leaf(
        "server",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    );
    leaf(
        "wrongname",
        "/CN=elsewhere.example",
        "subjectAltName=DNS:elsewhere.example\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    );
    leaf(
        "client",
        "/CN=u_cert",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    Some(())
}
