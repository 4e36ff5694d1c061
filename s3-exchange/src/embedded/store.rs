//! [`Store`]: `s3s-fs` with object listings completed the way S3 clients expect.
//!
//! `s3s-fs` lists objects without a storage class; AWS, MinIO and Ceph always send one, and
//! clients rely on it (`s3contents`, the Lab's S3 file browser, reads `StorageClass` of every
//! entry and fails on a listing without it). An empty delimiter (`delimiter=`, which `s3fs`
//! sends for a recursive listing: `find`, `get(recursive=True)`, `du`) means no delimiter, as on
//! AWS; `s3s-fs` would split every key after its prefix's first character. A key that is only a
//! "directory" (a prefix of other keys, e.g. a Zarr store `cube.zarr`) is no object, as on AWS:
//! HEAD and GET answer `NoSuchKey` (`s3s-fs` fails with 500 opening the directory, which breaks
//! `s3fs.exists`, `xarray.open_zarr` and every client probing a prefix). Everything else is
//! passed through unchanged.

use std::path::PathBuf;

use async_trait::async_trait;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, Object, ObjectStorageClass,
    PutObjectInput, PutObjectOutput, UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput,
    UploadPartOutput,
};
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

/// The embedded store's objects: a directory tree (`root`) served by `s3s-fs`.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) fs: s3s_fs::FileSystem,
    pub(crate) root: PathBuf,
}

impl Store {
    /// `bucket/key` is a directory of the tree, not an object. (Keys that leave the caller's
    /// prefix never get here: the access check refused them.)
    async fn is_directory(&self, bucket: &str, key: &str) -> bool {
        tokio::fs::metadata(self.root.join(bucket).join(key))
            .await
            .is_ok_and(|m| m.is_dir())
    }
}

fn with_storage_class(objects: Option<&mut Vec<Object>>) {
    for o in objects.into_iter().flatten() {
        o.storage_class
            .get_or_insert_with(|| ObjectStorageClass::from_static(ObjectStorageClass::STANDARD));
    }
}

// `#[async_trait]` must see the methods themselves, so the macro writes the whole impl.
macro_rules! store_impl {
    ($($op:ident($input:ty) -> $output:ty;)*) => {
        #[async_trait]
        impl S3 for Store {
            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.fs.$op(req).await
                }
            )*

            async fn list_objects(
                &self,
                mut req: S3Request<ListObjectsInput>,
            ) -> S3Result<S3Response<ListObjectsOutput>> {
                req.input.delimiter = req.input.delimiter.filter(|d| !d.is_empty());
                let mut resp = self.fs.list_objects(req).await?;
                with_storage_class(resp.output.contents.as_mut());
                Ok(resp)
            }

            async fn list_objects_v2(
                &self,
                mut req: S3Request<ListObjectsV2Input>,
            ) -> S3Result<S3Response<ListObjectsV2Output>> {
                req.input.delimiter = req.input.delimiter.filter(|d| !d.is_empty());
                let mut resp = self.fs.list_objects_v2(req).await?;
                with_storage_class(resp.output.contents.as_mut());
                Ok(resp)
            }

            async fn head_object(
                &self,
                req: S3Request<HeadObjectInput>,
            ) -> S3Result<S3Response<HeadObjectOutput>> {
                if self.is_directory(&req.input.bucket, &req.input.key).await {
                    return Err(s3_error!(NoSuchKey));
                }
                self.fs.head_object(req).await
            }

            async fn get_object(
                &self,
                req: S3Request<GetObjectInput>,
            ) -> S3Result<S3Response<GetObjectOutput>> {
                if self.is_directory(&req.input.bucket, &req.input.key).await {
                    return Err(s3_error!(NoSuchKey));
                }
                self.fs.get_object(req).await
            }
        }
    };
}

store_impl! {
    create_bucket(CreateBucketInput) -> CreateBucketOutput;
    copy_object(CopyObjectInput) -> CopyObjectOutput;
    delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
    get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
    head_bucket(HeadBucketInput) -> HeadBucketOutput;
    list_buckets(ListBucketsInput) -> ListBucketsOutput;
    put_object(PutObjectInput) -> PutObjectOutput;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
    upload_part(UploadPartInput) -> UploadPartOutput;
    upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
    list_parts(ListPartsInput) -> ListPartsOutput;
    complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
}
